from lumebench.cli import main

raise SystemExit(main())

"""Parity with the official SemEval evaluation environment (``lume parity``)."""

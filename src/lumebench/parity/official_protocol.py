"""The official SemEval-2025 Task 4 evaluation protocol, run INSIDE the official environment.

This file is a standalone script (it never imports lumebench): ``lume parity`` runs it with the
python of a side virtualenv that holds the organisers' pinned versions (transformers 4.45.2,
pandas 2.2.3, rouge_score 0.1.2, scikit-learn 1.5.0, ...; see ``official_env.py``). It is
lumebench's own re-implementation of what ``evaluate_generations.py`` and Open-Instruct's MMLU
``run_eval.py`` do (SPEC.md §2), step for step:

- load the checkpoint with ``AutoModelForCausalLM.from_pretrained(path, torch_dtype=...)`` and
  ``AutoTokenizer.from_pretrained(path)``; ``pad_token = eos_token``;
- per row, one prompt at a time: ``tokenizer(input, return_tensors='pt').input_ids``;
  ``model.generate(input_ids, max_new_tokens=256, do_sample=False, use_cache=True,
  pad_token_id=eos)`` without an attention mask; ``batch_decode`` of the new tokens with
  ``skip_special_tokens=True, clean_up_tokenization_spaces=True``; optionally the unused
  teacher-forced NLL forward over ``input + output``;
- per split, the rows go into a pandas DataFrame, out to CSV and back (``pd.read_csv``), and are
  scored there: ``id[:-1].endswith('sc'|'qa')`` picks the metric, ``RougeScorer(['rouge1',
  'rougeL'], use_stemmer=True).score(str(gold), str(gen))['rougeL'].recall`` and
  ``int(str(gold).strip().lower() == str(gen).strip().lower())``; ``np.mean`` of each score column
  and ``df.groupby('task')[[reg, kno]].mean()`` per task; the forget values inverted;
  ``statistics.harmonic_mean``;
- MIA: ``model(ids, labels=ids).loss`` per document, through CSV, ``roc_curve`` + ``auc`` on −loss;
- MMLU: the Open-Instruct prompt (k shots decreased while the prompt is over ``max_length``
  tokens), batch 1, softmax over the four candidate tokens ``encode(" " + letter)[-1]``, argmax.

Usage: ``python official_protocol.py SPEC.json OUT.json`` (the spec is written by
``lumebench.parity.compare``).
"""

import json
import os
import statistics
import sys


def versions():
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "tokenizers", "accelerate", "datasets", "pandas", "numpy",
                 "rouge-score", "scikit-learn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def load(spec):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, spec["dtype"])
    model = AutoModelForCausalLM.from_pretrained(spec["checkpoint"], torch_dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(spec["checkpoint"])
    tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def probe(model, tokenizer, texts, out_path):
    """Token ids and full fp32 logits of each probe text (saved as safetensors for the caller)."""
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    arrays, ids = {}, []
    with torch.no_grad():
        for i, text in enumerate(texts):
            enc = tokenizer(text, return_tensors="pt")
            ids.append(enc.input_ids[0].tolist())
            if not ids[-1]:
                continue  # nothing to run on an empty text (no BOS)
            logits = model(enc.input_ids.long()).logits[0].float().numpy()
            arrays[f"logits_{i}"] = np.ascontiguousarray(logits)
    save_file(arrays, out_path)
    return ids


def generate_split(model, tokenizer, rows, max_new_tokens, extra_forward):
    import torch

    out = []
    for r in rows:
        input_ids = tokenizer(r["input"], return_tensors="pt").input_ids
        with torch.no_grad():
            seq = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 use_cache=True, pad_token_id=tokenizer.eos_token_id)
            new = seq[:, len(input_ids[0]):]
            text = tokenizer.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=True)[0]
            if extra_forward:
                both = tokenizer(r["input"] + r["output"], return_tensors="pt").input_ids
                labels = both.clone()
                labels[:, : len(input_ids[0])] = -100
                model(both, labels=labels)
        out.append({"id": r["id"], "text": text, "token_ids": new[0].tolist()})
    return out


def score_split(rows, gens, workdir, split):
    """The official compute_metrics for one split, through the CSV round trip."""
    import numpy as np
    import pandas as pd
    from rouge_score import rouge_scorer

    frame = pd.DataFrame({"id": [r["id"] for r in rows], "task": [r["task"] for r in rows],
                          "input": [r["input"] for r in rows],
                          "expected_output": [r["output"] for r in rows],
                          "model_output": [g["text"] for g in gens], "nll": [0.0] * len(rows)})
    path = os.path.join(workdir, f"{split}_0.csv")
    frame.to_csv(path, index=False)
    df = pd.read_csv(path)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    df["regurgitation-score-rouge-1"] = None
    df["regurgitation-score"] = None
    df["knowledge-score"] = None
    per_row = []
    for i, (gen, gt) in enumerate(zip(df["model_output"].tolist(), df["expected_output"].tolist())):
        row_id = df.loc[i, "id"]
        if row_id[:-1].endswith("sc"):
            s = scorer.score(str(gt), str(gen))
            df.loc[i, "regurgitation-score-rouge-1"] = s["rouge1"].recall
            df.loc[i, "regurgitation-score"] = s["rougeL"].recall
            per_row.append({"id": row_id, "rougeL_recall": s["rougeL"].recall, "csv_generated": str(gen),
                            "csv_gold": str(gt)})
        elif row_id[:-1].endswith("qa"):
            em = int(str(gt).strip().lower() == str(gen).strip().lower())
            df.loc[i, "knowledge-score"] = em
            per_row.append({"id": row_id, "exact_match": em, "csv_generated": str(gen), "csv_gold": str(gt)})
    block = {"overall-regurgitation-score": float(np.mean(df["regurgitation-score"])),
             "overall-knowledge-score": float(np.mean(df["knowledge-score"]))}
    per_task = df.groupby("task")[["regurgitation-score", "knowledge-score"]].mean().to_dict(orient="index")
    block.update({t: {k: float(v) for k, v in d.items()} for t, d in per_task.items()})
    values = [float(v) for inner in per_task.values() for v in inner.values()]
    if split == "forget":
        values = [1 - v for v in values]
    return block, values, per_row


def mia(model, tokenizer, docs, workdir):
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.metrics import auc, roc_curve

    losses = {}
    for name in ("member", "nonmember"):
        nll = []
        with torch.no_grad():
            for d in docs[name]:
                ids = tokenizer(d["document"], return_tensors="pt").input_ids
                nll.append(model(ids, labels=ids.clone()).loss.item())
        path = os.path.join(workdir, f"mia_{name}_0.csv")
        pd.DataFrame({"id": [d["id"] for d in docs[name]], "nll": nll}).to_csv(path, index=False)
        losses[name] = pd.read_csv(path)["nll"].tolist()
    scores = -1 * np.array(losses["member"] + losses["nonmember"])
    labels = [1] * len(losses["member"]) + [0] * len(losses["nonmember"])
    fp, tp, _ = roc_curve(labels, scores)
    return {"member": losses["member"], "nonmember": losses["nonmember"], "auc": float(auc(fp, tp))}


# --- MMLU, the Open-Instruct way ------------------------------------------------------------------
# allenai/open-instruct eval/mmlu/run_eval.py (commit 0ddab2b): format_subject, format_example and
# gen_prompt, the same steps on the spec's questions ({"question", "choices", "answer"}) instead of
# pandas rows. The header is "... about {}.".format(format_subject(subject)); format_subject puts a
# space before every word, so two spaces follow "about" ("about  astronomy.").

def format_subject(subject):
    return "".join(" " + w for w in subject.split("_"))


def format_example(q, include_answer=True):
    text = q["question"]
    for letter, choice in zip("ABCD", q["choices"]):
        text += "\n{}. {}".format(letter, choice)
    text += "\nAnswer:"
    if include_answer:
        text += " {}\n\n".format(q["answer"])
    return text


def gen_prompt(shots, subject, k):
    prompt = "The following are multiple choice questions (with answers) about {}.\n\n".format(
        format_subject(subject))
    for q in shots[:k]:
        prompt += format_example(q)
    return prompt


def mmlu_prompt(tokenizer, shots, subject, q, ntrain, max_length):
    """Open-Instruct's ``eval_hf_model`` prompt of one question: ``k = ntrain`` shots, decreased while
    the prompt is longer than ``max_length`` tokens (stopping at 0, where Open-Instruct would loop)."""
    end = format_example(q, include_answer=False)
    k = min(ntrain, len(shots))
    prompt = gen_prompt(shots, subject, k) + end
    while k > 0 and len(tokenizer(prompt, add_special_tokens=False).input_ids) > max_length:
        k -= 1
        prompt = gen_prompt(shots, subject, k) + end
    return prompt


def mmlu(model, tokenizer, spec):
    import torch

    ntrain, max_length = spec["ntrain"], spec["max_length"]
    cands = [tokenizer.encode(" " + letter, add_special_tokens=False)[-1] for letter in "ABCD"]
    out, right, total = {}, 0, 0
    with torch.no_grad():
        for subject, data in spec["subjects"].items():
            letters = ""
            for q in data["test"]:
                prompt = mmlu_prompt(tokenizer, data["shots"], subject, q, ntrain, max_length)
                enc = tokenizer([prompt], return_tensors="pt")
                logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits[:, -1, :]
                probs = torch.softmax(logits, dim=-1)[0, cands]
                letter = "ABCD"[int(torch.argmax(probs))]
                letters += letter
                right += letter == q["answer"]
                total += 1
            out[subject] = letters
    return {"subjects": out, "average_acc": right / total if total else None, "n": total}


def main(spec_path, out_path):
    import time

    import torch

    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    os.makedirs(spec["workdir"], exist_ok=True)
    t0 = time.perf_counter()
    model, tokenizer = load(spec)
    result = {"versions": versions(), "dtype": spec["dtype"], "wall_s": {}}
    if spec.get("probe"):
        result["probe_ids"] = probe(model, tokenizer, spec["probe"], os.path.join(spec["workdir"], "probe.safetensors"))
    if spec.get("rows"):
        t = time.perf_counter()
        terms, results, gens, rows_scored = [], {}, {}, {}
        for split in ("forget", "retain"):
            rows = spec["rows"].get(split) or []
            if not rows:
                continue
            g = generate_split(model, tokenizer, rows, spec["max_new_tokens"], spec.get("extra_forward", False))
            block, values, per_row = score_split(rows, g, spec["workdir"], split)
            results[split + "-set"] = block
            terms.extend(values)
            gens[split] = g
            rows_scored[split] = per_row
        results["aggregated-terms"] = terms
        try:
            results["harmonic-mean-task-aggregate"] = statistics.harmonic_mean(terms)
        except (statistics.StatisticsError, ValueError, TypeError):
            results["harmonic-mean-task-aggregate"] = None
        result.update({"generations": gens, "scores": rows_scored, "results": results})
        result["wall_s"]["generation"] = time.perf_counter() - t
    if spec.get("mia"):
        t = time.perf_counter()
        result["mia"] = mia(model, tokenizer, spec["mia"], spec["workdir"])
        result["wall_s"]["mia"] = time.perf_counter() - t
    if spec.get("mmlu"):
        t = time.perf_counter()
        result["mmlu"] = mmlu(model, tokenizer, spec["mmlu"])
        result["wall_s"]["mmlu"] = time.perf_counter() - t
    result["wall_s"]["total"] = time.perf_counter() - t0
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

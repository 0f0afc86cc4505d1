#!/usr/bin/env python3
"""Reference sentence embeddings with Python onnxruntime, for checking rag-infer.

    python reference_embeddings.py MODEL_DIR SENTENCES_JSON OUT_JSON [--max-tokens 256]

Each sentence is embedded on its own (no padding at all), with the same model.onnx and
tokenizer.json as the Rust embedder: truncation to --max-tokens, mean pooling over the
attention mask, L2 normalisation. Run it with the asset cache's Python environment
(`$(python3 tools/assets.py path)/pyenv/bin/python`).
"""
import argparse
import json

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("sentences")
    ap.add_argument("out")
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args()

    tok = Tokenizer.from_file(f"{args.model_dir}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(max_length=args.max_tokens)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(f"{args.model_dir}/model.onnx", opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}

    sentences = json.load(open(args.sentences, encoding="utf-8"))
    out = []
    for s in sentences:
        e = tok.encode(s)
        ids = np.array([e.ids], dtype=np.int64)
        mask = np.array([e.attention_mask], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = sess.run(None, feed)[0]
        if hidden.ndim == 3:
            m = mask[..., None].astype(np.float32)
            v = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        else:
            v = hidden
        v = v[0] / max(np.linalg.norm(v[0]), 1e-12)
        out.append({"tokens": len(e.ids), "embedding": v.astype(float).tolist()})
    json.dump(out, open(args.out, "w"))


if __name__ == "__main__":
    main()

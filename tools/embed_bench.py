#!/usr/bin/env python3
"""Python onnxruntime side of the `embed` report: the same model, tokenizer, inputs,
pooling and thread count as rag-infer. A worker: it reads the cases from INPUTS_JSON,
then for each line `CASE_INDEX SECONDS` on stdin runs that case for about SECONDS
and prints `{"case": i, "sentences_per_s": x}`, so that the report can interleave
its rounds with rag-infer's.

    python embed_bench.py MODEL_DIR INPUTS_JSON THREADS
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main():
    model_dir, inputs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.enable_padding()  # to the longest in the batch
    tok.enable_truncation(max_length=256)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(f"{model_dir}/model.onnx", opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    cases = json.load(open(inputs))["cases"]

    def embed(texts):
        enc = tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        h = sess.run(None, feed)[0]
        m = mask[..., None].astype(np.float32)
        v = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    for line in sys.stdin:
        index, seconds = line.split()
        case = cases[int(index)]
        texts, batch = case["texts"], case["batch"]
        embed(texts[:batch])  # warm-up
        done, i, start = 0, 0, time.perf_counter()
        while True:
            if i + batch > len(texts):
                i = 0
            embed(texts[i:i + batch])
            i += batch
            done += batch
            elapsed = time.perf_counter() - start
            if elapsed >= float(seconds) and done >= 3 * batch:
                break
        print(json.dumps({"case": int(index), "sentences_per_s": done / elapsed}), flush=True)


if __name__ == "__main__":
    main()

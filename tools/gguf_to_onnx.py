#!/usr/bin/env python3
"""Convert a llama- or qwen2-architecture GGUF (SmolLM2-135M-Instruct Q4_1,
Qwen2.5-Coder-0.5B-Instruct Q5_0/Q8_0/Q4_K/Q6_K) into an ONNX decoder with a KV cache,
and its GGUF vocabulary into a Hugging Face tokenizer.json. Needs only the gguf, numpy
and onnx packages (no torch).

qwen2 differs from llama in: Q/K/V biases; rotary embedding applied to the halves of
each head (NEOX), which llama.cpp stores without llama's Q/K row permutation, so no
un-permute; a separate output head; and its own pre-tokenizer split.

    python gguf_to_onnx.py MODEL.gguf OUT_DIR [--weights q4|fp32] [--verify]

The graph follows the common decoder layout, so models exported by the usual tools
load the same way:
  inputs   input_ids [b, s] int64, attention_mask [b, past + s] int64,
           position_ids [b, s] int64, past_key_values.N.key/value [b, kv_heads, past, head_dim]
  outputs  logits [b, 1, vocab] (last position), present.N.key/value [b, kv_heads, past + s, head_dim]
--weights q4 keeps 4-bit blocks of 32 as com.microsoft MatMulNBits (requantized per block
from the dequantized GGUF values onto integer zero points, which ONNX Runtime's fast
kernels take); fp32 dequantizes the GGUF weights.
--verify runs a numpy forward pass of the same weights and compares logits.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

F = TensorProto.FLOAT
ACCURACY_LEVEL = 4  # int8 activations: the fast kernel (41.8 vs 32.2 tok/s at level 1, same accuracy here)
I64 = TensorProto.INT64


def field(r, key):
    return r.fields[key].contents()


class Model:
    def __init__(self, path):
        self.r = GGUFReader(path)
        r = self.r
        arch = field(r, "general.architecture")
        if arch not in ("llama", "qwen2"):
            raise SystemExit(f"unsupported architecture {arch!r}")
        self.arch = arch
        # llama.cpp permutes llama's Q/K rows for its interleaved rotary; qwen2's
        # (NEOX, rotate-half) rows are stored as they are.
        self.permuted = arch == "llama"
        self.layers = int(field(r, f"{arch}.block_count"))
        self.hidden = int(field(r, f"{arch}.embedding_length"))
        self.ffn = int(field(r, f"{arch}.feed_forward_length"))
        self.heads = int(field(r, f"{arch}.attention.head_count"))
        self.kv_heads = int(field(r, f"{arch}.attention.head_count_kv"))
        self.head_dim = self.hidden // self.heads
        self.rope_base = float(field(r, f"{arch}.rope.freq_base"))
        self.eps = float(field(r, f"{arch}.attention.layer_norm_rms_epsilon"))
        self.context = int(field(r, f"{arch}.context_length"))
        self.tensors = {t.name: t for t in r.tensors}
        self.vocab = int(self.tensors["token_embd.weight"].shape[1])

    def f32(self, name):
        """Dequantized weight as [out, in] (PyTorch layout)."""
        t = self.tensors[name]
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
        return a.reshape([int(x) for x in reversed(t.shape)])

    def bias(self, weight_name):
        """The bias of a linear layer, if the model has one (qwen2's Q/K/V)."""
        name = weight_name.replace(".weight", ".bias")
        return self.f32(name).reshape(-1) if name in self.tensors else None

    def q4_1_blocks(self, name):
        """(qs [out, blocks, 32] uint8 values 0..15, d [out, blocks], m [out, blocks])."""
        t = self.tensors[name]
        if t.tensor_type != GGMLQuantizationType.Q4_1:
            return None
        out_dim, in_dim = int(t.shape[1]), int(t.shape[0])
        raw = np.asarray(t.data, dtype=np.uint8).reshape(out_dim, in_dim // 32, 20)
        d = raw[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = raw[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = raw[..., 4:20]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # element j low nibble, j+16 high
        return q, d, m


def unpermute(w, n_heads):
    """Undo llama.cpp's Q/K row permutation (GGUF pairs -> Hugging Face rotate-half)."""
    out, inp = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def unpermute_rows(a, n_heads):
    """The same permutation on arrays whose first axis is the output row."""
    out = a.shape[0]
    rest = a.shape[1:]
    return a.reshape(n_heads, out // n_heads // 2, 2, *rest).swapaxes(1, 2).reshape(out, *rest)


class Builder:
    def __init__(self, m, weights):
        self.m = m
        self.weights = weights
        self.nodes, self.inits = [], []
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, value, name=None, dtype=None):
        arr = np.asarray(value, dtype=dtype)
        nm = name or self.name("const")
        self.inits.append(numpy_helper.from_array(arr, nm))
        return nm

    def op(self, kind, inputs, domain=None, outputs=1, **attrs):
        outs = [self.name(kind) for _ in range(outputs)]
        self.nodes.append(helper.make_node(kind, inputs, outs, domain=domain, **attrs))
        return outs[0] if outputs == 1 else outs

    def linear(self, x, name, n_heads_permute=None):
        m = self.m
        if not m.permuted:
            n_heads_permute = None
        bias = m.bias(name)
        y = self.matmul(x, name, n_heads_permute)
        if bias is not None:
            if n_heads_permute:
                bias = unpermute_rows(bias, n_heads_permute)
            y = self.op("Add", [y, self.const(bias.astype(np.float32), name + ".bias")])
        return y

    def matmul(self, x, name, n_heads_permute):
        m = self.m
        if self.weights not in ("q4", "q8"):
            w = m.f32(name)
            if n_heads_permute:
                w = unpermute(w, n_heads_permute)
            return self.op("MatMul", [x, self.const(w.T.copy(), name)])
        blocks = m.q4_1_blocks(name)
        if blocks is not None:
            q, d, mn = blocks
            if n_heads_permute:
                q, d, mn = (unpermute_rows(a, n_heads_permute) for a in (q, d, mn))
            x_deq = d[..., None] * q + mn[..., None]
        else:
            # Other GGUF types (Q5_0, Q8_0, Q4_K, Q6_K): from their dequantized values.
            w = m.f32(name)
            if n_heads_permute:
                w = unpermute(w, n_heads_permute)
            n_out, n_in = w.shape
            if n_in % 32:
                return self.op("MatMul", [x, self.const(w.T.copy(), name)])
            x_deq = w.reshape(n_out, n_in // 32, 32)
        n_out, n_blocks, _ = x_deq.shape
        if self.weights == "q8":
            return self.q8(x, x_deq, name)
        # Q4_1 blocks are value = d*q + m. ONNX Runtime's fast 4-bit kernels take integer
        # zero points, value = (q' - z)*s, whose grid always contains 0 while Q4_1's need
        # not, so each block of 32 is requantized from its dequantized values onto the
        # closest such grid: the added error is within half a step, like Q4_1's own.
        lo = np.minimum(x_deq.min(-1), 0.0)
        hi = np.maximum(x_deq.max(-1), 0.0)
        scale = ((hi - lo) / 15.0).astype(np.float32)
        safe = np.where(scale == 0, 1.0, scale)
        zp = np.clip(np.round(-lo / safe), 0, 15).astype(np.uint8)
        q2 = np.clip(np.round(x_deq / safe[..., None]) + zp[..., None], 0, 15).astype(np.uint8)
        packed = (q2[..., 0::2] | (q2[..., 1::2] << 4)).astype(np.uint8)  # consecutive pairs
        if n_blocks % 2:
            zp = np.concatenate([zp, np.zeros((n_out, 1), np.uint8)], axis=1)
        zp_packed = (zp[:, 0::2] | (zp[:, 1::2] << 4)).astype(np.uint8)
        return self.op(
            "MatMulNBits",
            [x, self.const(packed, name + ".q4"), self.const(scale.reshape(-1), name + ".scales"),
             self.const(zp_packed.reshape(-1), name + ".zero_points")],
            domain="com.microsoft", K=n_blocks * 32, N=n_out, bits=4, block_size=32, accuracy_level=ACCURACY_LEVEL,
        )

    def q8(self, x, x_deq, name):
        """8-bit blocks of 32 (MatMulNBits bits=8): for GGUF types with more than 4 bits
        (Q5_0, Q6_K, Q8_0), which 4 bits would coarsen."""
        n_out, n_blocks, _ = x_deq.shape
        lo = np.minimum(x_deq.min(-1), 0.0)
        hi = np.maximum(x_deq.max(-1), 0.0)
        scale = ((hi - lo) / 255.0).astype(np.float32)
        safe = np.where(scale == 0, 1.0, scale)
        zp = np.clip(np.round(-lo / safe), 0, 255).astype(np.uint8)
        q = np.clip(np.round(x_deq / safe[..., None]) + zp[..., None], 0, 255).astype(np.uint8)
        return self.op(
            "MatMulNBits",
            [x, self.const(q, name + ".q8"), self.const(scale.reshape(-1), name + ".scales"),
             self.const(zp.reshape(-1), name + ".zero_points")],
            domain="com.microsoft", K=n_blocks * 32, N=n_out, bits=8, block_size=32, accuracy_level=ACCURACY_LEVEL,
        )

    def rmsnorm(self, x, weight_name):
        w = self.const(self.m.f32(weight_name).reshape(-1), weight_name)
        sq = self.op("Mul", [x, x])
        mean = self.op("ReduceMean", [sq], axes=[-1], keepdims=1)
        rs = self.op("Sqrt", [self.op("Add", [mean, self.const(np.float32(self.m.eps))])])
        return self.op("Mul", [self.op("Div", [x, rs]), w])


def build(m, weights):
    b = Builder(m, weights)
    H, D, nh, nkv = m.hidden, m.head_dim, m.heads, m.kv_heads
    inputs = [
        helper.make_tensor_value_info("input_ids", I64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", I64, ["batch", "total"]),
        helper.make_tensor_value_info("position_ids", I64, ["batch", "seq"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", F, ["batch", 1, m.vocab])]
    for i in range(m.layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", F, ["batch", nkv, "past", D]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", F, ["batch", nkv, "total", D]))

    embed = m.f32("token_embd.weight")  # [vocab, hidden]
    emb_name = b.const(embed, "token_embd.weight")
    x = b.op("Gather", [emb_name, "input_ids"], axis=0)

    # Rotary tables, gathered by position: cos/sin [b, 1, s, D].
    inv = 1.0 / (m.rope_base ** (np.arange(0, D, 2, dtype=np.float64) / D))
    pos = np.arange(m.context, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(pos), np.cos(pos)], axis=-1).astype(np.float32)
    sin = np.concatenate([np.sin(pos), np.sin(pos)], axis=-1).astype(np.float32)
    cos_t = b.op("Unsqueeze", [b.op("Gather", [b.const(cos, "rope.cos"), "position_ids"], axis=0), b.const([1], dtype=np.int64)])
    sin_t = b.op("Unsqueeze", [b.op("Gather", [b.const(sin, "rope.sin"), "position_ids"], axis=0), b.const([1], dtype=np.int64)])

    # Additive mask [b, 1, s, total]: causal over absolute positions, and padding.
    shape_ids = b.op("Shape", ["input_ids"])
    s_len = b.op("Gather", [shape_ids, b.const(1, dtype=np.int64)], axis=0)
    total = b.op("Gather", [b.op("Shape", ["attention_mask"]), b.const(1, dtype=np.int64)], axis=0)
    past = b.op("Sub", [total, s_len])
    zero_i, one_i = b.const(0, dtype=np.int64), b.const(1, dtype=np.int64)
    kpos = b.op("Range", [zero_i, total, one_i])
    qpos = b.op("Add", [b.op("Range", [zero_i, s_len, one_i]), past])
    causal = b.op("LessOrEqual", [b.op("Unsqueeze", [kpos, b.const([0], dtype=np.int64)]),
                                   b.op("Unsqueeze", [qpos, b.const([1], dtype=np.int64)])])  # [s, total]
    pad = b.op("Equal", [b.op("Unsqueeze", ["attention_mask", b.const([1, 2], dtype=np.int64)]), one_i])  # [b,1,1,total]
    allowed = b.op("And", [causal, pad])
    mask = b.op("Where", [allowed, b.const(np.float32(0.0)), b.const(np.float32(-1e9))])

    half = D // 2
    def rope(t):  # t [b, heads, s, D]
        x1 = b.op("Slice", [t, b.const([0], dtype=np.int64), b.const([half], dtype=np.int64), b.const([3], dtype=np.int64)])
        x2 = b.op("Slice", [t, b.const([half], dtype=np.int64), b.const([D], dtype=np.int64), b.const([3], dtype=np.int64)])
        rot = b.op("Concat", [b.op("Neg", [x2]), x1], axis=-1)
        return b.op("Add", [b.op("Mul", [t, cos_t]), b.op("Mul", [rot, sin_t])])

    def heads(t, n):  # [b, s, n*D] -> [b, n, s, D]
        r = b.op("Reshape", [t, b.const([0, 0, n, D], dtype=np.int64)])
        return b.op("Transpose", [r], perm=[0, 2, 1, 3])

    scale = b.const(np.float32(1.0 / np.sqrt(D)))
    rep = nh // nkv
    for i in range(m.layers):
        p = f"blk.{i}."
        h = b.rmsnorm(x, p + "attn_norm.weight")
        q = rope(heads(b.linear(h, p + "attn_q.weight", nh), nh))
        k = rope(heads(b.linear(h, p + "attn_k.weight", nkv), nkv))
        v = heads(b.linear(h, p + "attn_v.weight"), nkv)
        k_all = b.op("Concat", [f"past_key_values.{i}.key", k], axis=2)
        v_all = b.op("Concat", [f"past_key_values.{i}.value", v], axis=2)
        b.nodes.append(helper.make_node("Identity", [k_all], [f"present.{i}.key"]))
        b.nodes.append(helper.make_node("Identity", [v_all], [f"present.{i}.value"]))
        if rep > 1:  # grouped-query attention: [b, kv, t, D] -> [b, kv*rep, t, D]
            def repeat(t):
                u = b.op("Unsqueeze", [t, b.const([2], dtype=np.int64)])
                shp = b.op("Shape", [u])
                target = b.op("Concat", [b.op("Slice", [shp, b.const([0], dtype=np.int64), b.const([2], dtype=np.int64)]),
                                         b.const([rep], dtype=np.int64),
                                         b.op("Slice", [shp, b.const([3], dtype=np.int64), b.const([5], dtype=np.int64)])], axis=0)
                e = b.op("Expand", [u, target])
                return b.op("Reshape", [e, b.const([0, nh, -1, D], dtype=np.int64)])
            k_all, v_all = repeat(k_all), repeat(v_all)
        scores = b.op("Mul", [b.op("MatMul", [q, b.op("Transpose", [k_all], perm=[0, 1, 3, 2])]), scale])
        probs = b.op("Softmax", [b.op("Add", [scores, mask])], axis=-1)
        ctx = b.op("Transpose", [b.op("MatMul", [probs, v_all])], perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", [ctx, b.const([0, 0, H], dtype=np.int64)])
        x = b.op("Add", [x, b.linear(ctx, p + "attn_output.weight")])
        h = b.rmsnorm(x, p + "ffn_norm.weight")
        gate = b.linear(h, p + "ffn_gate.weight")
        up = b.linear(h, p + "ffn_up.weight")
        act = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])]), up])
        x = b.op("Add", [x, b.linear(act, p + "ffn_down.weight")])

    last = b.op("Gather", [x, b.const(-1, dtype=np.int64)], axis=1)  # [b, hidden]
    h = b.rmsnorm(b.op("Unsqueeze", [last, b.const([1], dtype=np.int64)]), "output_norm.weight")
    if "output.weight" in m.tensors:  # a separate head (qwen2), quantized like the layers
        b.nodes.append(helper.make_node("Identity", [b.linear(h, "output.weight")], ["logits"]))
    else:  # tied to the embedding (SmolLM2)
        b.nodes.append(helper.make_node("MatMul", [h, b.const(embed.T.copy(), "lm_head.weight")], ["logits"]))

    graph = helper.make_graph(b.nodes, "decoder", inputs, outputs, b.inits)
    opsets = [helper.make_opsetid("", 17)]
    if weights in ("q4", "q8"):
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="rag-sdk gguf_to_onnx")
    model.ir_version = 8
    return model


def numpy_forward(m, ids):
    """Reference forward pass (no cache) with the dequantized weights; last-position logits."""
    H, D, nh, nkv = m.hidden, m.head_dim, m.heads, m.kv_heads
    def norm(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + m.eps) * w
    emb = m.f32("token_embd.weight")
    x = emb[ids]
    s = len(ids)
    inv = 1.0 / (m.rope_base ** (np.arange(0, D, 2) / D))
    ang = np.arange(s)[:, None] * inv[None, :]
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)
    def rope(t):
        rot = np.concatenate([-t[..., D // 2:], t[..., :D // 2]], -1)
        return t * cos + rot * sin
    causal = np.triu(np.full((s, s), -1e9), 1)
    def proj(h, name, n_heads):
        w, bias = m.f32(name), m.bias(name)
        if m.permuted and n_heads:
            w = unpermute(w, n_heads)
            bias = unpermute_rows(bias, n_heads) if bias is not None else None
        y = h @ w.T
        return y + bias if bias is not None else y
    for i in range(m.layers):
        p = f"blk.{i}."
        h = norm(x, m.f32(p + "attn_norm.weight").reshape(-1))
        q = proj(h, p + "attn_q.weight", nh).reshape(s, nh, D).transpose(1, 0, 2)
        k = proj(h, p + "attn_k.weight", nkv).reshape(s, nkv, D).transpose(1, 0, 2)
        v = proj(h, p + "attn_v.weight", None).reshape(s, nkv, D).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, nh // nkv, 0), np.repeat(v, nh // nkv, 0)
        a = q @ k.transpose(0, 2, 1) / np.sqrt(D) + causal
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(s, H)
        x = x + ctx @ m.f32(p + "attn_output.weight").T
        h = norm(x, m.f32(p + "ffn_norm.weight").reshape(-1))
        g, u = h @ m.f32(p + "ffn_gate.weight").T, h @ m.f32(p + "ffn_up.weight").T
        x = x + (g / (1 + np.exp(-g)) * u) @ m.f32(p + "ffn_down.weight").T
    h = norm(x[-1], m.f32("output_norm.weight").reshape(-1))
    head = m.f32("output.weight") if "output.weight" in m.tensors else emb
    return h @ head.T


QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer_json(m):
    r = m.r
    tokens = [str(t) for t in field(r, "tokenizer.ggml.tokens")]
    merges = [str(x) for x in field(r, "tokenizer.ggml.merges")]
    types = [int(t) for t in field(r, "tokenizer.ggml.token_type")]
    model_kind = field(r, "tokenizer.ggml.model")
    if model_kind != "gpt2":
        raise SystemExit(f"unsupported tokenizer model {model_kind!r}")
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (3, 4)  # CONTROL, USER_DEFINED
    ]
    pre = str(field(r, "tokenizer.ggml.pre")) if "tokenizer.ggml.pre" in r.fields else "default"
    if pre == "qwen2":
        # Qwen2's split (its tokenizer.json): contractions, letters with one leading
        # non-letter, single digits, punctuation runs, newlines, spaces; NFC first.
        normalizer = {"type": "NFC"}
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ]}
    else:
        normalizer = None
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ]}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }


def default_system(template):
    """The system prompt a ChatML template inserts when the chat has none: the first
    system turn written out as a constant (not one assembled from template variables)."""
    import re
    for found in re.finditer(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", template, re.S):
        text = found.group(1)
        if not any(markup in text for markup in ("{{", "{%", "' +", "+ '")):
            # An escaped newline inside a jinja string literal is a newline.
            return text.replace("\\n", "\n")
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    ap.add_argument("--weights", choices=["q4", "q8", "fp32"], default="q4")
    ap.add_argument("--verify", action="store_true")
    args = ap.parse_args()
    m = Model(args.gguf)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build(m, args.weights)
    tmp = out / "model.onnx.part"
    # Past protobuf's 2 GB (a 0.5B model in fp32) the weights go to a file beside it.
    big = sum(t.ByteSize() for t in model.graph.initializer) > (1 << 31) - (64 << 20)
    if big:
        onnx.save(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data", size_threshold=1024)
    else:
        onnx.save(model, tmp)
    tmp.replace(out / "model.onnx")
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json(m), ensure_ascii=False))
    eos = int(field(m.r, "tokenizer.ggml.eos_token_id"))
    template = field(m.r, "tokenizer.chat_template")
    config = {
        "architecture": m.arch, "layers": m.layers, "hidden": m.hidden, "ffn": m.ffn, "heads": m.heads,
        "kv_heads": m.kv_heads, "head_dim": m.head_dim, "vocab": m.vocab, "context_window": m.context,
        "eos_token_id": eos, "bos_token_id": int(field(m.r, "tokenizer.ggml.bos_token_id")),
        "chat_template": "chatml" if "<|im_start|>" in str(template) else "unknown",
        "default_system": default_system(str(template)),
        "weights": args.weights,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    print(f"wrote {out}/model.onnx ({(out / 'model.onnx').stat().st_size / 1e6:.1f} MB, weights {args.weights})")
    if args.verify:
        import onnxruntime as ort
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        ids = tok.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n").ids
        sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
                "position_ids": np.arange(len(ids), dtype=np.int64)[None]}
        for i in range(m.layers):
            for kind in ("key", "value"):
                feed[f"past_key_values.{i}.{kind}"] = np.zeros((1, m.kv_heads, 0, m.head_dim), np.float32)
        got = sess.run(["logits"], feed)[0][0, -1]
        want = numpy_forward(m, np.array(ids))
        cos = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
        print(f"verify: cosine(onnx, numpy) = {cos:.6f}, argmax onnx {int(got.argmax())} numpy {int(want.argmax())} "
              f"({tok.decode([int(want.argmax())])!r})")
        # Requantization: q4 ~0.983 measured on SmolLM2's Q4_1; q8 on Qwen2.5's Q5_0/Q6_K.
        floor = {"fp32": 0.999, "q8": 0.98, "q4": 0.98}[args.weights]
        if cos < floor or got.argmax() != want.argmax():
            raise SystemExit("verification failed")


if __name__ == "__main__":
    main()

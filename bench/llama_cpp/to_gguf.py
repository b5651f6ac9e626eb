#!/usr/bin/python3
"""Writes a Strata/Hugging Face llama checkpoint as GGUF for llama.cpp.

Used by bench/llama_cpp_compare.sh so both engines read the same weights:
every matrix stays bf16 (GGML type BF16) byte for byte, norms become f32 as
llama.cpp expects, and q/k rows are reordered from Hugging Face's
rotate-half layout to GGML's interleaved rope layout (a permutation of rows,
no arithmetic). The SentencePiece vocabulary in tokenizer.model is carried
over and padded with unused pieces to the model's vocab_size.

    to_gguf.py MODEL_DIR OUT.gguf

Written from the GGUF format description (version 3, little-endian).
"""
import json
import os
import struct
import sys

import numpy as np

ALIGN = 32
# GGUF metadata value types.
T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9
# GGML tensor types.
GGML_F32, GGML_BF16 = 0, 30
LLAMA_FTYPE_MOSTLY_BF16 = 32


def fail(msg):
    sys.exit(f"to_gguf: {msg}")


def read_safetensors(model_dir):
    """Maps tensor name -> (dtype, shape, file, offset)."""
    files = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    if not files:
        fail(f"{model_dir}: no .safetensors file")
    tensors = {}
    for name in files:
        path = os.path.join(model_dir, name)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            start, _ = info["data_offsets"]
            tensors[key] = (info["dtype"], info["shape"], path, 8 + n + start)
    return tensors


def load(tensors, name):
    if name not in tensors:
        fail(f"tensor {name} is missing")
    dtype, shape, path, offset = tensors[name]
    count = int(np.prod(shape))
    if dtype == "BF16":
        raw = np.fromfile(path, dtype=np.uint16, count=count, offset=offset)
        return dtype, raw.reshape(shape)
    if dtype == "F32":
        return dtype, np.fromfile(path, dtype=np.float32, count=count, offset=offset).reshape(shape)
    fail(f"tensor {name}: dtype {dtype} is not supported (bf16 or f32 only)")


def as_f32(dtype, a):
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a


def rope_rows(a, heads):
    """Hugging Face q/k rows (per head: first halves, then second halves) to
    GGML's interleaved pairs."""
    rows, cols = a.shape
    d = rows // heads
    return a.reshape(heads, 2, d // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def sentencepiece_pieces(path):
    """(piece, score, type) from a SentencePiece ModelProto, read directly:
    field 1 of the model is a repeated message whose fields 1, 2, 3 are the
    piece, its score and its type."""
    data = open(path, "rb").read()

    def varint(buf, i):
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value, i

    def fields(buf):
        i = 0
        while i < len(buf):
            key, i = varint(buf, i)
            num, wire = key >> 3, key & 7
            if wire == 0:
                value, i = varint(buf, i)
            elif wire == 1:
                value, i = buf[i:i + 8], i + 8
            elif wire == 2:
                n, i = varint(buf, i)
                value, i = buf[i:i + n], i + n
            elif wire == 5:
                value, i = buf[i:i + 4], i + 4
            else:
                fail(f"{path}: unsupported protobuf wire type {wire}")
            yield num, value

    pieces = []
    for num, value in fields(data):
        if num != 1:
            continue
        piece, score, kind = "", 0.0, 1
        for f, v in fields(value):
            if f == 1:
                piece = v.decode("utf-8")
            elif f == 2:
                (score,) = struct.unpack("<f", v)
            elif f == 3:
                kind = v
        pieces.append((piece, score, kind))
    return pieces


class Writer:
    def __init__(self):
        self.kv = []
        self.tensors = []  # (name, array as stored, ggml type)

    def add(self, key, vtype, value):
        self.kv.append((key, vtype, value))

    def tensor(self, name, array, ggml_type):
        self.tensors.append((name, np.ascontiguousarray(array), ggml_type))

    @staticmethod
    def string(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def value(self, vtype, v):
        if vtype == T_U32:
            return struct.pack("<I", v)
        if vtype == T_I32:
            return struct.pack("<i", v)
        if vtype == T_F32:
            return struct.pack("<f", v)
        if vtype == T_BOOL:
            return struct.pack("<B", 1 if v else 0)
        if vtype == T_STRING:
            return self.string(v)
        elem, items = v
        out = [struct.pack("<IQ", elem, len(items))]
        if elem == T_F32:
            out.append(np.asarray(items, dtype="<f4").tobytes())
        elif elem == T_I32:
            out.append(np.asarray(items, dtype="<i4").tobytes())
        else:
            out.extend(self.value(elem, x) for x in items)
        return b"".join(out)

    def write(self, path):
        head = [b"GGUF", struct.pack("<IQQ", 3, len(self.tensors), len(self.kv))]
        for key, vtype, v in self.kv:
            head += [self.string(key), struct.pack("<I", vtype), self.value(vtype, v)]
        offset = 0
        offsets = []
        for name, a, ggml_type in self.tensors:
            offsets.append(offset)
            dims = list(reversed(a.shape))  # GGML: innermost dimension first
            head += [self.string(name), struct.pack("<I", len(dims))]
            head += [struct.pack("<Q", d) for d in dims]
            head += [struct.pack("<IQ", ggml_type, offset)]
            offset += (a.nbytes + ALIGN - 1) // ALIGN * ALIGN
        blob = b"".join(head)
        with open(path + ".partial", "wb") as f:
            f.write(blob)
            f.write(b"\0" * ((-len(blob)) % ALIGN))
            for (_, a, _), off in zip(self.tensors, offsets):
                a.tofile(f)
                f.write(b"\0" * ((-a.nbytes) % ALIGN))
        os.replace(path + ".partial", path)


def main():
    if len(sys.argv) != 3:
        fail("usage: to_gguf.py MODEL_DIR OUT.gguf")
    model_dir, out = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    if cfg.get("model_type") != "llama":
        fail(f"{model_dir}/config.json: model_type {cfg.get('model_type')!r}; only llama is written")
    hidden, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim", hidden // heads)
    vocab = cfg["vocab_size"]
    tensors = read_safetensors(model_dir)

    w = Writer()
    w.add("general.architecture", T_STRING, "llama")
    w.add("general.name", T_STRING, os.path.basename(os.path.normpath(model_dir)))
    w.add("general.file_type", T_U32, LLAMA_FTYPE_MOSTLY_BF16)
    w.add("llama.context_length", T_U32, cfg.get("max_position_embeddings", 2048))
    w.add("llama.embedding_length", T_U32, hidden)
    w.add("llama.block_count", T_U32, layers)
    w.add("llama.feed_forward_length", T_U32, cfg["intermediate_size"])
    w.add("llama.rope.dimension_count", T_U32, head_dim)
    w.add("llama.attention.head_count", T_U32, heads)
    w.add("llama.attention.head_count_kv", T_U32, kv_heads)
    w.add("llama.attention.key_length", T_U32, head_dim)
    w.add("llama.attention.value_length", T_U32, head_dim)
    w.add("llama.attention.layer_norm_rms_epsilon", T_F32, cfg.get("rms_norm_eps", 1e-6))
    w.add("llama.rope.freq_base", T_F32, cfg.get("rope_theta", 10000.0))
    w.add("llama.vocab_size", T_U32, vocab)

    pieces = sentencepiece_pieces(os.path.join(model_dir, "tokenizer.model"))
    if len(pieces) > vocab:
        fail(f"tokenizer.model has {len(pieces)} pieces, more than vocab_size {vocab}")
    pieces += [(f"<unused{i}>", 0.0, 5) for i in range(vocab - len(pieces))]
    w.add("tokenizer.ggml.model", T_STRING, "llama")
    w.add("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, [p for p, _, _ in pieces]))
    w.add("tokenizer.ggml.scores", T_ARRAY, (T_F32, [s for _, s, _ in pieces]))
    w.add("tokenizer.ggml.token_type", T_ARRAY, (T_I32, [t for _, _, t in pieces]))
    w.add("tokenizer.ggml.unknown_token_id", T_U32, 0)
    w.add("tokenizer.ggml.bos_token_id", T_U32, cfg.get("bos_token_id", 1))
    w.add("tokenizer.ggml.eos_token_id", T_U32, cfg.get("eos_token_id", 2))

    def matrix(dst, src, permute_heads=0):
        dtype, a = load(tensors, src)
        if dtype != "BF16":
            fail(f"tensor {src}: {dtype}; the comparison is on bf16 weights")
        if permute_heads:
            a = rope_rows(a, permute_heads)
        w.tensor(dst, a, GGML_BF16)

    def vector(dst, src):
        dtype, a = load(tensors, src)
        w.tensor(dst, as_f32(dtype, a).astype("<f4"), GGML_F32)

    matrix("token_embd.weight", "model.embed_tokens.weight")
    for i in range(layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        vector(b + "attn_norm.weight", p + "input_layernorm.weight")
        matrix(b + "attn_q.weight", p + "self_attn.q_proj.weight", heads)
        matrix(b + "attn_k.weight", p + "self_attn.k_proj.weight", kv_heads)
        matrix(b + "attn_v.weight", p + "self_attn.v_proj.weight")
        matrix(b + "attn_output.weight", p + "self_attn.o_proj.weight")
        vector(b + "ffn_norm.weight", p + "post_attention_layernorm.weight")
        matrix(b + "ffn_gate.weight", p + "mlp.gate_proj.weight")
        matrix(b + "ffn_up.weight", p + "mlp.up_proj.weight")
        matrix(b + "ffn_down.weight", p + "mlp.down_proj.weight")
    vector("output_norm.weight", "model.norm.weight")
    if not cfg.get("tie_word_embeddings", False):
        matrix("output.weight", "lm_head.weight")
    w.write(out)


if __name__ == "__main__":
    main()

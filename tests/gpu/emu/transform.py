# transform.py REPO OUT: copies REPO/kernels/cuda to OUT/kernels/cuda for the SIMT emulator:
# kernel<<<grid, block, smem, stream>>>(args) becomes emu_launch(grid, block, smem, lambda),
# ptx.cuh is replaced by ptx_emu.cuh, and dynamic shared memory points at the emulator's buffer.
# Nothing else changes: the kernels compiled by g++ are the source nvcc compiles.
import os, re, shutil, sys
repo, out = sys.argv[1], sys.argv[2]
src_dir = os.path.join(repo, "kernels/cuda")
dst_dir = os.path.join(out, "kernels/cuda")
os.makedirs(dst_dir, exist_ok=True)

def split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{": depth += 1
        if ch in ")]}": depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip()); cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts

def transform_launches(text):
    while True:
        i = text.find("<<<")
        if i < 0: return text
        # kernel expression: identifier with optional <...>
        j = i
        if text[j - 1] == ">":
            depth = 0
            while True:
                j -= 1
                if text[j] == ">": depth += 1
                elif text[j] == "<":
                    depth -= 1
                    if depth == 0: break
        k = j
        while k > 0 and (text[k - 1].isalnum() or text[k - 1] == "_"): k -= 1
        kernel = text[k:i]
        e = text.find(">>>", i)
        cfg = split_top(text[i + 3:e])
        p = e + 3
        assert text[p] == "(", text[p:p + 20]
        depth, q = 0, p
        while True:
            if text[q] == "(": depth += 1
            elif text[q] == ")":
                depth -= 1
                if depth == 0: break
            q += 1
        args = text[p + 1:q]
        smem = cfg[2] if len(cfg) > 2 else "0"
        repl = "emu_launch(dim3(%s), dim3(%s), %s, [=]() { %s(%s); })" % (cfg[0], cfg[1], smem, kernel, args)
        text = text[:k] + repl + text[q + 1:]

for name in os.listdir(src_dir):
    path = os.path.join(src_dir, name)
    if name.endswith(".mk"): continue
    text = open(path).read()
    if name == "ptx.cuh":
        text = open(os.path.join(os.path.dirname(__file__), "ptx_emu.cuh")).read()
    text = text.replace("extern __shared__ uint4 prefill_smem[];", "uint4 *prefill_smem = (uint4 *)emu_dyn_smem();")
    if name.endswith(".cu") or name.endswith(".cuh"): text = transform_launches(text)
    open(os.path.join(dst_dir, name), "w").write(text)

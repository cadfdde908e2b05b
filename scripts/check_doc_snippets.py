#!/usr/bin/env python3
"""Compile every C / C++ / CUDA code block of README.md and docs/*.md.

Run through scripts/check-doc-snippets.sh (CI: scripts/ci-extra.sh). Needs
gcc and nvcc, no GPU. The rules a page follows so that this works:

Fenced blocks (```lang ... ```) must name their language.
  c                         compiled as C11: $CC -std=c11 -Wall -Wextra -Werror
                            -pedantic -Iinclude -c
  cuda, cu, cpp, c++, cxx   compiled with $NVCC -std=c++17 -Iinclude
                            -gencode arch=compute_90a,code=sm_90a -c
  text sh bash shell console ini meson cmake python make diff json yaml toml
                            not compiled (counted as skipped)
  anything else, or none    an error: tag what is not code as `text`
Indented (4-space) blocks are never compiled: keep them to shell lines,
formulas and diagrams; code goes in a fenced block.

A block is a whole translation unit unless an HTML comment (invisible on
GitHub) right before its opening fence says otherwise:

  <!-- check: body
  extern int T;                 (optional lines: context the block needs,
  extern void *workspace;        usually declarations of the names it uses)
  -->

  check: file   the block is a translation unit (the default); the context
                lines, if any, are inserted as below.
  check: body   the block is a fragment of statements. Its leading lines
                that are blank, comments, preprocessor lines or
                FP8MOE_DECLARE... / FP8MOE_DEFINE... stay at file scope; the
                context lines follow them; the rest of the block becomes the
                body of `void fp8moe_doc_snippet(void)`. Unused variables are
                not warned about in a body (a snippet may show a value).
  check: skip REASON   not compiled; the reason is required.

In both file and body modes the context lines go after the block's leading
file-scope lines (so they may use what those #include). #line directives map
every diagnostic back to the page and line it came from.

Output: one line per compiled block, then a summary; a failing block prints
its page, line, language and mode, the compiler's messages and the source
that was compiled, and the exit status is 1. Options: page paths to check
only those; JOBS=n parallel compilers (default: CPU count); KEEP=1 keeps the
generated sources (printed path).
"""
import concurrent.futures
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

C_TAGS = {"c"}
CUDA_TAGS = {"cuda", "cu", "cpp", "c++", "cxx"}
SKIP_TAGS = {"text", "sh", "bash", "shell", "console", "ini", "meson", "cmake", "python", "make", "diff", "json",
             "yaml", "toml"}

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"<!--\s*check:\s*(?P<body>.*?)-->", re.S)
HEAD_LINE = re.compile(r"^\s*($|#|//|/\*|\*|FP8MOE_DECLARE|FP8MOE_DEFINE)")


class Block:
    def __init__(self, page, line, tag, lines, mode="file", context=None, context_line=0, reason=""):
        self.page, self.line, self.tag, self.lines = page, line, tag, lines
        self.mode, self.context, self.context_line, self.reason = mode, context or [], context_line, reason


def parse_marker(text, page, line):
    """'body\\nextern int T;\\n' -> (mode, reason, context lines)."""
    first, _, rest = text.partition("\n")
    words = first.split(None, 1)
    mode = words[0] if words else "file"
    arg = words[1].strip() if len(words) > 1 else ""
    if mode not in ("file", "body", "skip"):
        raise SystemExit(f"{page}:{line}: unknown check mode '{mode}' (file, body or skip REASON)")
    if mode == "skip" and not arg:
        raise SystemExit(f"{page}:{line}: 'check: skip' needs a reason")
    if mode != "skip" and arg:
        raise SystemExit(f"{page}:{line}: 'check: {mode}' takes no argument on its line (context goes below it)")
    context = rest.split("\n")
    while context and not context[-1].strip():
        context.pop()
    return mode, arg, context


def blocks_of(page):
    with open(page, encoding="utf-8") as f:
        lines = f.read().split("\n")
    out, errors = [], []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m.group("indent")), m.group("fence"), m.group("info").strip()
        tag = info.split()[0].lower() if info else ""
        start = i + 1  # 1-based line of the opening fence is i + 1
        body, j = [], i + 1
        while j < len(lines):
            c = lines[j]
            if c.strip().startswith(fence[0] * len(fence)) and c.strip().strip(fence[0]) == "":
                break
            body.append(c[indent:] if c[:indent].strip() == "" else c.lstrip())
            j += 1
        if j == len(lines):
            errors.append(f"{page}:{start}: fenced block never closed")
        # a marker: the comment that ends on the last non-blank line before the fence
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mode, reason, context, context_line = "file", "", [], 0
        if k >= 0 and lines[k].rstrip().endswith("-->"):
            s = k
            while s >= 0 and "<!--" not in lines[s]:
                s -= 1
            mm = MARKER.search("\n".join(lines[s:k + 1])) if s >= 0 else None
            if mm:
                mode, reason, context = parse_marker(mm.group("body").strip(" \t"), page, s + 1)
                context_line = s + 2  # the marker's second line is the first context line
        if not tag:
            errors.append(f"{page}:{start}: fenced block without a language tag (```c, ```cuda, ... or ```text)")
        elif tag not in C_TAGS | CUDA_TAGS | SKIP_TAGS:
            errors.append(f"{page}:{start}: unknown language tag '{tag}' (known: "
                          f"{' '.join(sorted(C_TAGS | CUDA_TAGS | SKIP_TAGS))})")
        out.append(Block(page, start, tag, body, mode, context, context_line, reason))
        i = j + 1
    return out, errors


def source_of(b):
    """The translation unit for block b, with #line directives back to the page."""
    n = 0
    while n < len(b.lines) and HEAD_LINE.match(b.lines[n]):
        n += 1
    if b.mode == "file" and not b.context:
        n = len(b.lines)  # nothing to insert: the block as it is
    src = [f'#line {b.line + 1} "{b.page}"'] + b.lines[:n]
    if b.context:
        src += [f'#line {b.context_line} "{b.page}"'] + b.context
    rest = b.lines[n:]
    if rest:
        wrapper = f'#line 1 "(the body wrapper of the block at {b.page}:{b.line})"'
        if b.mode == "body":
            src += [wrapper, "void fp8moe_doc_snippet(void);", "void fp8moe_doc_snippet(void) {"]
        src += [f'#line {b.line + 1 + n} "{b.page}"'] + rest
        if b.mode == "body":
            src += [wrapper.replace("#line 1", "#line 3"), "}"]
    return "\n".join(src) + "\n"


def compile_block(b, idx, tmp, root):
    cc = shlex.split(os.environ.get("CC", "gcc"))
    nvcc = shlex.split(os.environ.get("NVCC", "nvcc"))
    inc = "-I" + os.path.join(root, "include")
    stem = os.path.join(tmp, f"{idx:03d}_" + re.sub(r"[^A-Za-z0-9]+", "_", f"{b.page}_{b.line}"))
    if b.tag in C_TAGS:
        path = stem + ".c"
        cmd = cc + ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", inc]
        if b.mode == "body":
            cmd += ["-Wno-unused-variable", "-Wno-unused-but-set-variable"]
    else:
        path = stem + (".cu" if b.tag in ("cuda", "cu") else ".cpp")
        cmd = nvcc + ["-std=c++17", inc, "-gencode", "arch=compute_90a,code=sm_90a"]
    cmd += ["-c", path, "-o", stem + ".o"]
    src = source_of(b)
    with open(path, "w", encoding="utf-8") as f:
        f.write(src)
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        rc, log = p.returncode, p.stdout
    except OSError as e:
        rc, log = 127, f"cannot run {cmd[0]}: {e}"
    return b, rc, log, src, cmd, time.time() - t0


def main(argv):
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    os.chdir(root)
    pages = argv or ["README.md"] + sorted(glob.glob("docs/*.md"))
    blocks, errors = [], []
    for page in pages:
        bs, es = blocks_of(page)
        blocks += bs
        errors += es
    for e in errors:
        print("FAIL  " + e)
    todo = [b for b in blocks if b.tag in C_TAGS | CUDA_TAGS and b.mode != "skip"]
    skipped = [b for b in blocks if b not in todo]
    if todo and not errors:
        for tool, tags in ((os.environ.get("CC", "gcc"), C_TAGS), (os.environ.get("NVCC", "nvcc"), CUDA_TAGS)):
            if any(b.tag in tags for b in todo) and not shutil.which(shlex.split(tool)[0]):
                print(f"FAIL  {tool} not found (the C blocks need gcc, the CUDA blocks nvcc)")
                return 1
    tmp = tempfile.mkdtemp(prefix="fp8moe-doc-snippets.")
    failed = len(errors)
    jobs = int(os.environ.get("JOBS", "0")) or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
        futs = [ex.submit(compile_block, b, i, tmp, root) for i, b in enumerate(todo)]
        for fut in futs:  # in page order
            b, rc, log, src, cmd, secs = fut.result()
            what = f"{b.page}:{b.line} ({b.tag}, {b.mode})"
            if rc == 0:
                print(f"ok    {what:<40} {secs:5.1f} s")
                continue
            failed += 1
            print(f"FAIL  {what}: the code block opening at line {b.line} of {b.page} does not compile")
            print("  $ " + " ".join(shlex.quote(c) for c in cmd))
            print("  " + log.rstrip().replace("\n", "\n  "))
            print("  ---- compiled source (#line maps it back to the page):")
            for n, l in enumerate(src.rstrip("\n").split("\n"), 1):
                print(f"  {n:3d}| {l}")
    by_tag = {}
    for b in skipped:
        key = f"{b.tag or 'untagged'}" + (" (check: skip)" if b.mode == "skip" else "")
        by_tag[key] = by_tag.get(key, 0) + 1
    n_c = sum(b.tag in C_TAGS for b in todo)
    print(f"doc snippets: {len(todo)} compiled ({n_c} C, {len(todo) - n_c} CUDA/C++) from {len(pages)} pages, "
          f"{len(skipped)} not compiled ({', '.join(f'{k} {v}' for k, v in sorted(by_tag.items())) or 'none'}), "
          f"{failed} failed")
    if os.environ.get("KEEP"):
        print(f"sources kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env bash
# CI check (no GPU): every C / C++ / CUDA code block in README.md and
# docs/*.md compiles against include/, so the documentation cannot drift from
# the headers. C blocks: gcc -std=c11 -Wall -Wextra -Werror -pedantic; CUDA
# and C++ blocks: nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -c.
# The rules a page follows (language tags, the <!-- check: ... --> marker for
# fragments) are in the top comment of scripts/check_doc_snippets.py.
#
#   bash scripts/check-doc-snippets.sh                 # every page
#   bash scripts/check-doc-snippets.sh docs/api.md     # one page
#
# One line per compiled block, a summary last; exit status 1 if a block does
# not compile (its page, line, the compiler's messages and the source shown).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
exec python3 scripts/check_doc_snippets.py "$@"

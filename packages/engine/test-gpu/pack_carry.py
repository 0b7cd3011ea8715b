#!/usr/bin/env python3
"""Packs what the Node fixture stage of device-check.sh needs on a GPU machine (no network, no npx,
no node there) into <repo>/.device/ (ignored; name it in the device call's `carry`):
  node.xz     the node binary running this script, xz-compressed
  nm.tar.xz   the pnpm closure of vitest, tokenizers (its linux-x64-gnu binding only),
              @huggingface/jinja, node-addon-api and node-api-headers (to build the addon there),
              and re2js, with the symlinks that make them resolvable from the repo root,
              packages/engine and packages/formats; and @loraplex/formats's build (dist is ignored,
              so the device's tree lacks it) with the engine's link to it
Usage: pack_carry.py REPO [--out DIR] [--level N]. Prints each file's size in bytes."""
import argparse
import os
import shutil
import subprocess
import sys
import tarfile

# Packages the fixture tests import (src/tokenizer.ts: tokenizers, @huggingface/jinja; the tests:
# vitest) and the two header packages the addon build on the device reads.
STARTS = [
    'node_modules/vitest',
    'packages/engine/node_modules/tokenizers',
    'packages/engine/node_modules/@huggingface/jinja',
    'packages/engine/node_modules/node-addon-api',
    'packages/engine/node_modules/node-api-headers',
    'packages/formats/node_modules/re2js',
]

# Workspace packages the engine imports: (the engine's link to it, its built output).
WORKSPACE = [('packages/engine/node_modules/@loraplex/formats', 'packages/formats/dist')]


def siblings(real):
    """The packages a pnpm package resolves: every entry of the node_modules folder holding it."""
    parts = real.split(os.sep)
    i = len(parts) - 1 - parts[::-1].index('node_modules')
    base = os.sep.join(parts[:i + 1])
    out = []
    for e in os.listdir(base):
        p = os.path.join(base, e)
        for q in ([os.path.join(p, e2) for e2 in os.listdir(p)] if e.startswith('@') else [p]):
            if os.path.isdir(q):
                out.append(q)
    return out


def foreign_binary(path):
    # tokenizers ships one prebuilt binding per platform; the device is linux x86-64 with glibc.
    n = os.path.basename(path)
    return n.startswith('tokenizers.') and n.endswith('.node') and 'linux-x64-gnu' not in n


# Not read at run time: type declarations, source maps, Flow stubs, docs.
SKIP_SUFFIXES = ('.d.ts', '.d.mts', '.d.cts', '.map', '.flow', '.md')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('repo')
    ap.add_argument('--out', default=None)
    ap.add_argument('--level', type=int, default=6)
    args = ap.parse_args()
    repo = os.path.abspath(args.repo)
    os.chdir(repo)
    out = os.path.abspath(args.out or os.path.join(repo, '.device'))
    os.makedirs(out, exist_ok=True)
    missing = [s for s in STARTS if not os.path.exists(s)]
    if missing:
        sys.exit('pack_carry: not installed (run pnpm install): ' + ', '.join(missing))
    unbuilt = [d for _, d in WORKSPACE if not os.path.isdir(d)]
    if unbuilt:
        sys.exit('pack_carry: not built (run pnpm build): ' + ', '.join(unbuilt))
    links = set(STARTS)
    seen, stack, pkg_dirs = set(), [os.path.realpath(s) for s in STARTS], set()
    while stack:
        d = stack.pop()
        if d in seen:
            continue
        seen.add(d)
        parts = os.path.relpath(d, repo).split(os.sep)
        pkg_dirs.add(os.sep.join(parts[:3]))  # node_modules/.pnpm/<key>
        for q in siblings(d):
            links.add(os.path.relpath(q, repo))
            stack.append(os.path.realpath(q))
    tmp = os.path.join(out, 'nm.tar.xz.tmp')
    with tarfile.open(tmp, 'w:xz', preset=args.level) as tf:
        for link in sorted(links):
            if os.path.islink(link):
                tf.add(link, recursive=False)
        for link, built in WORKSPACE:
            tf.add(link, recursive=False)
            for dp, _, fn in os.walk(built):
                for n in fn:
                    if not n.endswith(SKIP_SUFFIXES):
                        tf.add(os.path.join(dp, n), recursive=False)
        for d in sorted(pkg_dirs):
            for dp, dn, fn in os.walk(d):
                for n in fn + [x for x in dn if os.path.islink(os.path.join(dp, x))]:
                    p = os.path.join(dp, n)
                    if foreign_binary(p) or n.endswith(SKIP_SUFFIXES) or (os.path.islink(p) and not os.path.exists(p)):
                        continue
                    tf.add(p, recursive=False)
    os.replace(tmp, os.path.join(out, 'nm.tar.xz'))
    node = os.path.realpath(shutil.which('node') or sys.exit('pack_carry: node not found'))
    with open(os.path.join(out, 'node.xz.tmp'), 'wb') as f:
        subprocess.run(['xz', '-T2', f'-{args.level}', '-c', node], stdout=f, check=True)
    os.replace(os.path.join(out, 'node.xz.tmp'), os.path.join(out, 'node.xz'))
    with open(os.path.join(out, 'node.version'), 'w') as f:
        f.write(subprocess.run([node, '--version'], capture_output=True, text=True).stdout)
    for f in ('node.xz', 'nm.tar.xz'):
        print(f, os.path.getsize(os.path.join(out, f)))


if __name__ == '__main__':
    main()

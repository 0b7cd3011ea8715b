#!/usr/bin/env python3
"""Writes device-check.sh's summary.json from its raw stage outputs and prints a compact version
(the last lines of a device call's output_tail). Exit status 0 when every stage that ran passed.
Usage: summarize.py RAW_DIR SUMMARY_JSON --started EPOCH --budget S --arch A --mode M"""
import argparse
import json
import os
import re
import time


def text(raw, name):
    p = os.path.join(raw, name)
    return open(p, errors='replace').read() if os.path.exists(p) else ''


def strip_ansi(s):
    return re.sub(r'\x1b\[[0-9;]*m', '', s)


def kernel_tests(kt):
    m = re.search(r'(\d+) passed, (\d+) failed', kt)
    res = {'passed': int(m.group(1)), 'failed': int(m.group(2))} if m else {'incomplete': kt[-400:]}
    res['device'] = next((l[8:] for l in kt.splitlines() if l.startswith('device: ')), '')
    res['failures'] = [l for l in kt.splitlines() if l.startswith('|') and l.rstrip().endswith('|') and 'FAIL' in l][:40]
    res['failures'] += [l for l in kt.splitlines() if l.startswith('FATAL')][:5]
    return res


def ptxas(build_log):
    """Per kernel: registers, spill bytes, shared memory (from -Xptxas=-v), for the largest users."""
    out, fn = [], None
    for line in build_log.splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for '(sm_\w+)'", line)
        if m:
            fn = {'kernel': m.group(1), 'arch': m.group(2)}
            continue
        if fn is None:
            continue
        m = re.search(r'(\d+) bytes spill stores, (\d+) bytes spill loads', line)
        if m:
            fn['spill_stores'], fn['spill_loads'] = int(m.group(1)), int(m.group(2))
        m = re.search(r'Used (\d+) registers', line)
        if m:
            fn['registers'] = int(m.group(1))
            m2 = re.search(r'(\d+) bytes smem', line)
            fn['smem'] = int(m2.group(1)) if m2 else 0
            out.append(fn)
            fn = None
    spills = [k for k in out if k.get('spill_stores', 0) or k.get('spill_loads', 0)]
    top = sorted(out, key=lambda k: -k['registers'])[:12]
    return {'kernels': len(out), 'spilling': spills[:20], 'most_registers': top}


def fixtures(raw):
    try:
        j = json.loads(text(raw, 'fixtures.json'))
    except ValueError:
        log = strip_ansi(text(raw, 'fixtures.log'))
        return {'log_tail': log[-800:]} if log else None
    fails = []
    for f in j.get('testResults', []):
        for a in f.get('assertionResults', []):
            if a.get('status') == 'failed':
                fails.append({'test': a.get('fullName'), 'message': (a.get('failureMessages') or [''])[0][:300]})
        if f.get('status') == 'failed' and not f.get('assertionResults'):
            fails.append({'file': f.get('name'), 'message': f.get('message', '')[:300]})
    return {'passed': j.get('numPassedTests', 0), 'failed': j.get('numFailedTests', 0), 'skipped': j.get('numPendingTests', 0),
            'failures': fails[:20]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('raw')
    ap.add_argument('dst')
    ap.add_argument('--started', type=int, required=True)
    ap.add_argument('--budget', type=int, required=True)
    ap.add_argument('--arch', default='')
    ap.add_argument('--mode', default='gpu')
    a = ap.parse_args()
    raw = a.raw
    s = {'mode': a.mode, 'seconds': int(time.time()) - a.started, 'budget_s': a.budget, 'arch': f'sm_{a.arch}', 'stages': {}}
    for line in text(raw, 'stages.txt').splitlines():
        name, rc, sec, limit = line.split()
        s['stages'][name] = {'rc': rc, 's': int(sec), 'limit_s': int(limit)}
        if rc not in ('0', 'skipped'):
            s['stages'][name]['log_tail'] = strip_ansi(text(raw, name + '.log'))[-1200:]
    env = text(raw, 'env.txt').splitlines()
    s['machine'] = env[:12]
    kt = text(raw, 'kernel_tests.md')
    if kt:
        s['kernel_tests'] = kernel_tests(kt)
    build = text(raw, 'build.log')
    if 'Compiling entry function' in build:
        s['ptxas'] = ptxas(build)
    bench_json = text(raw, 'bench.json')
    if bench_json:
        try:
            b = json.loads(bench_json)
            b.pop('markdown', None)
            s['bench'] = b
        except ValueError as e:
            s['bench_error'] = str(e)
    elif text(raw, 'bench.log'):
        s['bench_log_tail'] = strip_ansi(text(raw, 'bench.log'))[-1200:]
    hf = [json.loads(l) for l in text(raw, 'hf.jsonl').splitlines() if l.startswith('{')]
    if hf:
        s['hf'] = hf
    elif text(raw, 'hf.log'):
        s['hf_log_tail'] = text(raw, 'hf.log')[-1200:]
    fx = fixtures(raw)
    if fx:
        s['fixtures'] = fx
    for n in ('memcheck', 'racecheck'):
        if text(raw, n + '.log'):
            s[n] = text(raw, n + '.log')[-600:]
    carry = text(raw, 'carry.log')
    m = re.search(r'tree (\d+) \+ carry (\d+) = (\d+) bytes of (\d+)', carry)
    if m:
        s['carry'] = {'tree': int(m.group(1)), 'carry': int(m.group(2)), 'total': int(m.group(3)), 'limit': int(m.group(4))}
    ok = all(v['rc'] in ('0', 'skipped') for v in s['stages'].values())
    s['ok'] = ok
    with open(a.dst, 'w') as f:
        json.dump(s, f, indent=1)
    # Compact view for the end of the call's output.
    print('== stages: ' + ', '.join(f"{k} {v['rc']} ({v['s']} s)" for k, v in s['stages'].items()))
    if 'kernel_tests' in s:
        k = s['kernel_tests']
        print(f"== kernel tests: {k.get('passed')} passed, {k.get('failed')} failed")
        for l in k['failures'][:10]:
            print('   ' + l)
    if 'fixtures' in s:
        print(f"== fixtures: {json.dumps({k: v for k, v in s['fixtures'].items() if k != 'failures'})}")
    if 'ptxas' in s and s['ptxas']['spilling']:
        print('== ptxas spills: ' + ', '.join(k['kernel'][:60] for k in s['ptxas']['spilling'][:5]))
    if 'carry' in s:
        c = s['carry']
        print(f"== device call size: {c['total'] / 2**20:.1f} MiB of {c['limit'] / 2**20:.0f} MiB")
    print('== ' + ('all stages passed' if ok else 'FAILED: ' + ', '.join(k for k, v in s['stages'].items() if v['rc'] not in ('0', 'skipped'))))
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())

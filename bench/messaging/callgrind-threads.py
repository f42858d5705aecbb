#!/usr/bin/env python3
"""Instructions per message per thread from `CG_THREADS=1 bench/messaging/callgrind.sh` dumps
(MESSAGES = 100 messages per workload; one dump per thread, callgrind.out.PID.N-TID). A thread is named by
what it runs: the SIP core (`Core::run`), a plugin instance (`plugins::worker::run`), the
messaging store writer (`messaging::writer`), tokio's workers; threads that ran nothing in the
measured run are left out. Usage: callgrind-threads.py OUT [OUT...]"""
import glob, re, sys

# Messages per workload: callgrind.sh runs BENCH_RATES_ONLINE/OFFLINE=20 for BENCH_DURATION=5 s.
MESSAGES = 20 * 5

KINDS = [
    ('SIP thread (core)', r'huddle::core::Core::run'),
    # Before the writer: the plugin thread hands the writer its jobs (`writer::` names too).
    ('plugin thread', r'huddle::plugins::worker::run'),
    ('store writer', r'huddle_plugin_messaging::writer::'),
    ('tokio workers', r'tokio::runtime::scheduler::multi_thread::worker'),
]


def thread(path):
    total, kind = 0, 'other'
    with open(path, errors='replace') as f:
        text = f.read()
    m = re.search(r'^totals:\s+(\d+)', text, re.M)
    if m:
        total = int(m.group(1))
    for name, pat in KINDS:
        if re.search(pat, text):
            kind = name
            break
    return kind, total


runs = sys.argv[1:]
for part, name in ((1, 'online'), (2, 'offline')):
    rows = {}
    for r in runs:
        for path in glob.glob(f'{r}/callgrind.out.*.{part}-*'):
            kind, total = thread(path)
            if total:
                rows.setdefault(kind, {}).setdefault(r, 0)
                rows[kind][r] += total
    print('##', name, 'k instructions per message |', ' | '.join(runs))
    order = [k for k, _ in KINDS] + ['other']
    if not rows:
        continue
    def k_per_message(total):
        return '–' if total is None else f'{total / MESSAGES / 1e3:.1f}'

    for kind in order:
        if kind in rows:
            # A kind missing from a run is '–', not 0.0.
            print(f'| {kind} | ' + ' | '.join(k_per_message(rows[kind].get(r)) for r in runs) + ' |')
    totals = [[rows[k][r] for k in rows if r in rows[k]] for r in runs]
    print('| whole process | ' + ' | '.join(k_per_message(sum(t) if t else None) for t in totals) + ' |')

#!/usr/bin/env python3
"""Rows per message of bench/messaging/callgrind.sh dumps (100 messages per workload): the
plugin's callbacks, the whole process less the store writer's thread, the writer's instructions
per commit and the number of commits, and the whole process with the writer. Usage: callgrind-rows.py OUT [OUT...]"""
import re,subprocess,glob,sys
def load(f):
    out=subprocess.run(['callgrind_annotate','--inclusive=yes','--auto=no','--threshold=100','--show-percs=no',f],capture_output=True,text=True).stdout
    d={}
    for line in out.split('\n'):
        m=re.match(r'\s*([\d,]+)\s+(\S.*)',line)
        if m: d.setdefault(m.group(2),int(m.group(1).replace(',','')))
    tot=[v for k,v in d.items() if 'PROGRAM TOTALS' in k][0]
    return d,tot
def get(d,p): return sum(v for k,v in d.items() if re.search(p,k))
def commits(f):
    out=subprocess.run(['awk','''function name_of(s,    id) { if (match(s, /^\\([0-9]+\\)/)) { id = substr(s, 2, RLENGTH - 2); if (length(s) > RLENGTH) names[id] = substr(s, RLENGTH + 2); return names[id] } return s }
/^fn=/ { name_of(substr($0, 4)) }
/^cfn=/ { callee = name_of(substr($0, 5)) }
/^calls=/ { split(substr($0, 7), c, " "); calls[callee] += c[1] }
END { for (k in calls) if (k ~ /RedbStore::commit$/) print calls[k] }''',f],capture_output=True,text=True).stdout.split()
    return sum(int(x) for x in out)
runs=sys.argv[1:]
for i,name in ((1,'online'),(2,'offline')):
    print('##',name,'|',' | '.join(runs))
    rows={}
    for r in runs:
        f=glob.glob(f'{r}/callgrind.out.*[0-9].{i}')[0]
        d,tot=load(f)
        w=get(d,r'messaging::writer::commit \[')
        c=commits(f)
        cb=get(d,r'export::handle_request \[')+get(d,r'export::handle_response \[')+get(d,r'export::on_timer \[')
        rows[r]={'plugin callbacks (k/msg)':cb/1e5,'whole process (k/msg)':tot/1e5,
                 'whole process less the store writer (k/msg)':(tot-w)/1e5,'store writer (k/msg)':w/1e5,
                 'store writer per commit (k)':w/max(c,1)/1e3,'commits':c}
    for k in rows[runs[0]]:
        print(f'| {k} | '+' | '.join(f'{rows[r][k]:.1f}' for r in runs)+' |')

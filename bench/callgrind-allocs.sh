#!/usr/bin/env bash
# Instructions and heap allocations of one callgrind dump (bench/callgrind-huddle.sh with
# bench/profile-hook.sh): the total Ir and the calls into mimalloc's allocation entry points
# (mi_malloc, mi_zalloc, mi_realloc, and their _aligned forms: the `mimalloc` crate's global
# allocator calls the aligned ones for every Rust allocation; C code such as aws-lc may call the
# plain ones), summed from the call graph's `calls=` lines, so it needs no allocator hook.
#
#   bench/callgrind-allocs.sh /tmp/callgrind.out.<pid>.1 [more dumps...]
set -euo pipefail
for file in "$@"; do
	awk -v file="$file" '
		# Callgrind names functions once as "(id) name" and then by "(id)" alone.
		function name_of(s,    id) {
			if (match(s, /^\([0-9]+\)/)) {
				id = substr(s, 2, RLENGTH - 2)
				if (length(s) > RLENGTH) names[id] = substr(s, RLENGTH + 2)
				return names[id]
			}
			return s
		}
		/^fn=/ { name_of(substr($0, 4)) }
		/^cfn=/ { callee = name_of(substr($0, 5)) }
		/^calls=/ { split(substr($0, 7), c, " "); calls[callee] += c[1] }
		/^(summary|totals):/ { total = $2 }
		END {
			m = calls["mi_malloc"] + calls["mi_malloc_aligned"]
			z = calls["mi_zalloc"] + calls["mi_zalloc_aligned"]
			r = calls["mi_realloc"] + calls["mi_realloc_aligned"]
			printf "%s: %d instructions, %d allocations (malloc %d, zalloc %d, realloc %d), %d frees\n",
				file, total, m + z + r, m, z, r, calls["mi_free"]
		}' "$file"
done

#!/usr/bin/env bash
# Fail when a shipped ELF file needs a newer glibc (or libstdc++) than the oldest supported server has.
# Ubuntu 20.04 has glibc 2.31, Debian 10 2.28, CentOS/RHEL 8 2.28 → GLIBC_2.28 at most; CentOS 8's libstdc++ (GCC 8)
# has GLIBCXX_3.4.25 / CXXABI_1.3.11 → the limits for a binary that links the system libstdc++ (a zig build links
# libc++ statically and needs none). Prints, per file, the highest version found and every symbol over the limit.
#
# Usage: deploy/release/check-glibc.sh [--max 2.28] [--max-glibcxx 3.4.25] FILE|DIR|TARBALL...
#   DIR: every ELF file under it; TARBALL (.tar.gz): unpacked into a temporary directory first.
#        deploy/release/check-glibc.sh --self-test   the check fails a binary that needs more (this host's bash
#        against GLIBC_2.2.4) and passes it against a limit above everything
set -euo pipefail
max=2.28
max_cxx=3.4.25
max_cxxabi=1.3.11
args=()
while (($#)); do
  case $1 in
    --max) max=$2; shift 2 ;;
    --max-glibcxx) max_cxx=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --self-test)
      sh=$(command -v bash)
      if "$0" --max 2.2.4 "$sh" >/dev/null 2>&1; then echo "self-test FAIL: $sh passed --max 2.2.4" >&2; exit 1; fi
      out=$("$0" --max 2.2.4 "$sh" 2>/dev/null || true)
      grep -q '^    GLIBC_2\.' <<<"$out" || { echo "self-test FAIL: no offending symbol printed" >&2; exit 1; }
      "$0" --max 99 --max-glibcxx 99 "$sh" >/dev/null || { echo "self-test FAIL: $sh failed --max 99" >&2; exit 1; }
      echo "check-glibc self-test: ok"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
((${#args[@]})) || { echo "usage: $0 [--max 2.28] FILE|DIR|TARBALL..." >&2; exit 2; }
command -v objdump >/dev/null || { echo "objdump not found (Debian: binutils)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
files=()
for a in "${args[@]}"; do
  if [[ -f "$a" && "$a" == *.tar.gz ]]; then
    d="$tmp/${#files[@]}-$RANDOM"; mkdir -p "$d"; tar -C "$d" -xzf "$a"; a=$d
  fi
  if [[ -d "$a" ]]; then
    while IFS= read -r f; do
      [[ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" == '177ELF' ]] && files+=("$f")
    done < <(find "$a" -type f | sort)
  elif [[ -f "$a" ]]; then files+=("$a")
  else echo "no such file: $a" >&2; exit 2; fi
done
((${#files[@]})) || { echo "no ELF files in: ${args[*]}" >&2; exit 2; }

# version_gt A B: A > B, comparing dotted numbers.
version_gt() { [[ "$1" != "$2" && "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" == "$1" ]]; }

# highest PREFIX: the highest PREFIX_x.y.z among the "VERSION SYMBOL" lines on stdin (empty if none).
highest() { { grep -o "^$1_[0-9.]*" || true; } | sed "s/^$1_//" | sort -V | tail -1; }

fails=0
for f in "${files[@]}"; do
  # Undefined (imported) versioned symbols: "... *UND* ... (GLIBC_2.34) name" or "... GLIBC_2.34 name".
  syms=$(objdump -T "$f" 2>/dev/null | awk '$0 ~ /\*UND\*/ && match($0, /(GLIBC|GLIBCXX|CXXABI)_[0-9.]+/) {
           v = substr($0, RSTART, RLENGTH); print v, $NF }' | sort -u)
  glibc_hi=$(highest GLIBC <<<"$syms")
  cxx_hi=$(highest GLIBCXX <<<"$syms")
  needed=$(objdump -p "$f" | awk '$1 == "NEEDED" {print $2}' | paste -sd, -)
  bad=$(while read -r ver sym; do
          [[ -n "$ver" ]] || continue
          n=${ver#*_}
          case $ver in
            GLIBC_*) version_gt "$n" "$max" && echo "    $ver $sym" ;;
            GLIBCXX_*) version_gt "$n" "$max_cxx" && echo "    $ver $sym" ;;
            CXXABI_*) version_gt "$n" "$max_cxxabi" && echo "    $ver $sym" ;;
          esac
        done <<<"$syms" || true)
  name=${f#"$tmp"/*/}
  printf '%-60s GLIBC %-6s%s  needs: %s\n' "$name" "${glibc_hi:--}" "${cxx_hi:+ GLIBCXX $cxx_hi}" "${needed:-(static)}"
  if [[ -n "$bad" ]]; then
    echo "  FAIL: newer than GLIBC_$max / GLIBCXX_$max_cxx / CXXABI_$max_cxxabi:"
    echo "$bad"
    fails=$((fails + 1))
  fi
done
if ((fails)); then echo "check-glibc: $fails of ${#files[@]} file(s) need a newer glibc/libstdc++ than allowed" >&2; exit 1; fi
echo "check-glibc: ${#files[@]} file(s), none needs more than GLIBC_$max"

#!/usr/bin/env python3
"""A small mutation tester for Strata (no C++ mutation tool is packaged for
Debian). It reads tools/mutate/mutations.tsv: each line plants one small,
realistic bug - an off-by-one, a swapped comparison, a dropped term, a
removed call - as an exact text replacement in one source file, and names the
tests that should catch it. For every mutation it

  1. copies the tracked tree to a scratch folder (build-mutate/src; files
     whose content did not change keep their timestamps, so builds stay
     incremental) and configures build-mutate/build once (CUDA off: no
     mutation touches it);
  2. applies the mutation there (the pattern must occur exactly once),
  3. rebuilds only the targets its tests need,
  4. runs those tests (each `binary[:gtest_filter]`, or `ctest:REGEX`),
  5. restores the file,
and reports it CAUGHT (a build error counts too, as the compiler caught it),
SURVIVED, or STALE (the pattern no longer matches: fix the list).

  python3 tools/mutate/mutate.py [--only ID[,ID...]] [--list FILE] [--timeout S]

Prints one line per mutation and the score; writes build-mutate/report.json.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRATCH = os.path.join(ROOT, "build-mutate")
SRC = os.path.join(SCRATCH, "src")
BUILD = os.path.join(SCRATCH, "build")
# Test binaries that run the `strata` executable, which must be rebuilt too.
NEEDS_STRATA = {"services_cluster_test", "services_failover_test", "services_metrics_test",
                "services_planner_test", "strata_cli_test", "services_security_test",
                "services_public_api_test", "services_netns_test"}


class Mutation:
    def __init__(self, fields, line):
        if len(fields) < 6:
            raise ValueError(f"mutations line {line}: expected 6 or 7 tab-separated fields, "
                             f"got {len(fields)}")
        self.id, self.kind, self.file, self.pattern, self.replacement, tests = fields[:6]
        self.note = fields[6] if len(fields) > 6 else ""
        # {NL} stands for a newline and {TAB} for a tab; everything else,
        # backslashes included, is the source's text as it stands.
        self.pattern = self.pattern.replace("{NL}", "\n").replace("{TAB}", "\t")
        self.replacement = self.replacement.replace("{NL}", "\n").replace("{TAB}", "\t")
        self.tests = [t.strip() for t in tests.split(",") if t.strip()]
        self.line = line


def read_list(path):
    mutations = []
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            raw = raw.rstrip("\n")
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            mutations.append(Mutation(raw.split("\t"), n))
    ids = [m.id for m in mutations]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ValueError(f"duplicate mutation ids: {sorted(dup)}")
    return mutations


def sync_tree():
    """Copies every tracked (and untracked, not ignored) file into SRC,
    rewriting only files whose bytes differ."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
        check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):
            continue
        dst = os.path.join(SRC, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(src, "rb") as f:
            data = f.read()
        if os.path.exists(dst):
            with open(dst, "rb") as f:
                if f.read() == data:
                    continue
        with open(dst, "wb") as f:
            f.write(data)
        shutil.copymode(src, dst)


def run(cmd, timeout, **kw):
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
        return p.returncode, (p.stdout + p.stderr).decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        out = ((e.stdout or b"") + (e.stderr or b"")).decode(errors="replace")
        return 124, out + f"\n[timed out after {timeout} s]"


def configure():
    # Every run: the synced CMakeLists may name new targets, which a build of
    # several targets at once would not see if make re-ran cmake itself.
    os.makedirs(BUILD, exist_ok=True)
    rc, out = run(["cmake", "-S", SRC, "-B", BUILD, "-DCMAKE_BUILD_TYPE=Release",
                   "-DSTRATA_CUDA=OFF"], 600)
    if rc != 0:
        sys.exit("configure failed:\n" + out)
    # The reference tokenizers and templates (npm) that bash tools/test
    # installed into build/: the reference tests read them from the build dir.
    npm = os.path.join(ROOT, "build", "reference-npm")
    link = os.path.join(BUILD, "reference-npm")
    if os.path.isdir(npm) and not os.path.exists(link):
        os.symlink(npm, link)


def targets_of(tests):
    targets = set()
    for t in tests:
        if t.startswith("ctest:"):
            continue
        binary = t.split(":", 1)[0]
        targets.add(binary)
        if binary in NEEDS_STRATA:
            targets.add("strata")  # they start the real binary
    return sorted(targets)


def build(targets, timeout):
    if not targets:
        return 0, ""
    cmd = ["cmake", "--build", BUILD, "-j", str(os.cpu_count() or 2)]
    for t in targets:
        cmd += ["--target", t]
    return run(cmd, timeout)


def run_tests(tests, timeout):
    """Runs each test spec; returns (the first that failed, its output) or (None, "")."""
    for t in tests:
        if t.startswith("ctest:"):
            cmd = ["ctest", "--test-dir", BUILD, "-R", t[len("ctest:"):], "--output-on-failure"]
        else:
            binary, _, filt = t.partition(":")
            cmd = [os.path.join(BUILD, "tests", binary)]
            if filt:
                cmd.append(f"--gtest_filter={filt}")
        rc, out = run(cmd, timeout, cwd=BUILD)
        if rc != 0:
            return t, out
    return None, ""


def failed_test_names(output):
    names = []
    for line in output.splitlines():
        if line.startswith("[  FAILED  ] ") and "," not in line and "listed below" not in line:
            name = line[len("[  FAILED  ] "):].split(" (")[0].strip()
            if name not in names:
                names.append(name)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--list", default=os.path.join(ROOT, "tools", "mutate", "mutations.tsv"))
    ap.add_argument("--only", default="", help="comma-separated mutation ids")
    ap.add_argument("--timeout", type=int, default=120,
                    help="per test run, seconds (a hang counts as caught); builds get 20 minutes")
    args = ap.parse_args()
    mutations = read_list(args.list)
    if args.only:
        wanted = set(args.only.split(","))
        mutations = [m for m in mutations if m.id in wanted]
    sync_tree()
    configure()
    all_targets = sorted({t for m in mutations for t in targets_of(m.tests)})
    print(f"building {len(all_targets)} target(s) of the unmutated tree...", flush=True)
    rc, out = build(all_targets, 3600)
    if rc != 0:
        sys.exit("the unmutated tree does not build:\n" + out[-4000:])
    # The unmutated tree must pass every test the list names, or a "catch"
    # would mean nothing.
    for spec in sorted({t for m in mutations for t in m.tests}):
        failed, out = run_tests([spec], args.timeout)
        if failed:
            sys.exit(f"the unmutated tree fails {spec}:\n{out[-4000:]}")
    results = []
    for m in mutations:
        path = os.path.join(SRC, m.file)
        t0 = time.time()
        try:
            with open(path) as f:
                original = f.read()
        except FileNotFoundError:
            original = None
        if original is None or original.count(m.pattern) != 1:
            found = 0 if original is None else original.count(m.pattern)
            results.append({"id": m.id, "outcome": "STALE", "file": m.file,
                            "detail": f"pattern found {found} times"})
            print(f"STALE     {m.id:<28} {m.file}: pattern found {found} times", flush=True)
            continue
        try:
            with open(path, "w") as f:
                f.write(original.replace(m.pattern, m.replacement))
            rc, out = build(targets_of(m.tests), 1200)
            if rc != 0:
                outcome, by = "CAUGHT", "the compiler"
            else:
                failed, out = run_tests(m.tests, args.timeout)
                if failed:
                    names = failed_test_names(out)
                    outcome, by = "CAUGHT", failed + (": " + ", ".join(names[:3]) if names else "")
                else:
                    outcome, by = "SURVIVED", ""
        finally:
            with open(path, "w") as f:
                f.write(original)
        seconds = time.time() - t0
        results.append({"id": m.id, "kind": m.kind, "file": m.file, "outcome": outcome,
                        "caught_by": by, "seconds": round(seconds, 1), "note": m.note})
        tail = f"by {by}" if outcome == "CAUGHT" else (m.note or "")
        print(f"{outcome:<9} {m.id:<28} {m.kind:<18} {seconds:6.1f} s  {tail}", flush=True)
    # Rebuild the restored tree so the next run starts from it.
    build(all_targets, 3600)
    scored = [r for r in results if r["outcome"] != "STALE"]
    caught = sum(r["outcome"] == "CAUGHT" for r in scored)
    score = 100.0 * caught / len(scored) if scored else 0.0
    with open(os.path.join(SCRATCH, "report.json"), "w") as f:
        json.dump({"caught": caught, "total": len(scored), "score_percent": round(score, 1),
                   "stale": len(results) - len(scored), "mutations": results}, f, indent=1)
    print(f"score: {caught} of {len(scored)} mutations caught ({score:.1f}%)"
          + (f"; {len(results) - len(scored)} stale" if len(results) != len(scored) else ""))
    for r in scored:
        if r["outcome"] == "SURVIVED":
            print(f"  survived: {r['id']} ({r['file']}){': ' + r['note'] if r['note'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

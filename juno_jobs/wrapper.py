#!/usr/bin/env python3
"""juno-submit's job wrapper: read the inputs from this site's storage, run the payload, stage out the outputs.

Run by the batch system (or the local backend) as
    wrapper.py JOB ATTEMPT REQUEST_MEMORY_MB
in the job's scratch directory, with plain python3 and the standard library only: it runs on worker nodes
(the local grid's execute nodes) where neither the project's venv nor Rucio exists, and which share no file
system with the submitter. What it needs came with it by HTCondor's file transfer, into the scratch
directory: task.json (the payload, outputs, storage bases per RSE, argument template), JOB.json (this job's
inputs and variables) and the payload. It works in ./work, copies each output to the output RSE itself
(never over an existing file: the same adler32 there = done, another one = a conflict that overwrites
nothing), checks the storage's adler32 against its own, and ends by writing ./result.json, which the batch
system brings back to the submitter with the (size-capped) stdout and stderr. Files move in bulk, a few
processes per job rather than several per file: one xrdcp for all the inputs, one per output directory, both
copying task.json `copies` files at a time, and one checksum session before and after the outputs' copy.
No Rucio credential is needed or used here: the storage is written with the job's own storage credential
(README, production).

Site: $JUNO_SITE (the submit file sets it from the slot's JUNO_Site), else the machine ad's JUNO_Site.

Failures the wrapper detects, with its exit codes (the payload's own exit codes pass through):
  201 input     no input replica at this site could be read, or it arrived with the wrong adler32
  202 memory    the payload's resident set (all its processes) went over the memory request: the wrapper
                measures it every 0.2 s and stops the payload, as a batch system with cgroups would;
                the local pool enforces no limit, so this is what makes memory failures visible
  203 walltime  the payload ran past the task's wall time
  204 outputs   the payload succeeded but a declared output pattern matched nothing
  205 release   the release directory or the site executable is missing here
  206 stageout  an output could not be copied to the output RSE, or the storage's adler32 differs
  207 conflict  the output's PFN already holds other bytes (another adler32): nothing was overwritten
  208 unsafe    the job's description asks for something a job must never do (e.g. an input name that
                would write outside the input directory): refused
  209 wrapper   anything else that broke in the wrapper
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

EXIT = {"input": 201, "memory": 202, "walltime": 203, "outputs": 204, "release": 205, "stageout": 206,
        "conflict": 207, "unsafe": 208, "wrapper": 209}
POLL_S = 0.2
LOG_LIMIT = 1 << 20  # bytes of the payload's stdout and of its stderr that come back (task.json log_limit)
COPIES = 4  # files a job copies at once, in and out (task.json copies: the task's resources.copies)
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(msg: str) -> None:
    print(f"[juno-wrapper {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def adler32_file(path: Path) -> str:
    value = 1
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"


def job_spec(here: Path, job: int) -> dict[str, Any]:
    """This job's item (inputs, sites, RSEs, variables): JOB.json, transferred with the job."""
    path = here / f"{job}.json"
    try:
        return dict(json.loads(path.read_text()))
    except OSError as err:
        raise Failure("wrapper", f"{path.name} did not come with the job: {err}") from None


def safe_name(name: str) -> str:
    """A file name the job may create in its own directory: never absolute, never '..', never empty."""
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or "\0" in name:
        raise Failure("unsafe", f"refusing file name {name!r}: it would be written outside the job's directory")
    return name


def this_site() -> str:
    site = os.environ.get("JUNO_SITE", "")
    if site and "$$(" not in site:
        return site
    ad = os.environ.get("_CONDOR_MACHINE_AD")
    if ad and os.path.exists(ad):
        for line in Path(ad).read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "JUNO_Site":
                return value.strip().strip('"')
    return "unknown"


# --------------------------------------------------------------------------- inputs


def lfn_path(scope: str, name: str, raw_re: re.Pattern[str], derived_re: re.Pattern[str]) -> str:
    """The file's path below an RSE's prefix: Rucio's lfn2pfn algorithm `juno` (rucio_policy.lfn2pfn).

    Repeated here because the wrapper runs without the project installed; the patterns come from
    rucio_policy.naming through task.json, the unit tests hold both implementations equal, and planning
    checks the result against the PFN Rucio itself gives for a sample file at every RSE a task reads from.
    """
    started = None
    release = None
    if scope == "raw":
        m = raw_re.match(name)
        started = m.group("started") if m else None
    elif scope in ("rtraw", "esd"):
        m = derived_re.match(name)
        if m:
            started = m.group("started")
            release = m.group("tags").split("_")[-1]
    if started is not None:
        try:
            time.strptime(started, "%Y%m%d%H%M%S")
        except ValueError:
            started = None
    if started is not None:
        day = f"{started[:4]}/{started[4:8]}/{name}"
        return f"raw/{day}" if release is None else f"{scope}/{release}/{day}"
    digest = hashlib.md5(f"{scope}:{name}".encode()).hexdigest()
    top = scope.replace(".", "/") if scope.startswith(("user.", "group.")) else scope
    # A name with '/' (refused by the schema; registered before it was) is one escaped component, never a path.
    escaped = name.replace("%", "%25").replace("/", "%2F")
    return f"{top}/{digest[0:2]}/{digest[2:4]}/{'%2E' + escaped[1:] if escaped.startswith('.') else escaped}"


def xrdcp_many(sources: list[str], dest_dir: str, options: list[str], copies: int,
               timeout_s: float = 3600) -> tuple[set[int], str]:
    """One xrdcp for many sources into the directory `dest_dir` (ending in '/'), `copies` at a time
    (--parallel): (indices of the sources that failed, xrdcp's messages). A file's name there is its
    source's last path component. xrdcp goes on after a failed file and names it "Job #N" (1-based);
    when it fails without saying which, every source counts as failed (the caller checks each file)."""
    cmd = ["xrdcp", "--nopbar", "--parallel", str(max(1, min(copies, len(sources)))), *options, *sources, dest_dir]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return set(range(len(sources))), f"xrdcp of {len(sources)} files timed out after {timeout_s:.0f} s"
    text = (done.stdout + "\n" + done.stderr).strip()
    failed = {int(m.group(1)) - 1 for m in re.finditer(r"^Job #(\d+): \[ERROR\]", text, re.MULTILINE)}
    if done.returncode != 0 and not failed:
        failed = set(range(len(sources)))
    return failed, text[-2000:]


def copies_of(task: dict[str, Any]) -> int:
    """Files a job copies at once, in and out (task.json `copies`, the task's resources.copies)."""
    return max(1, int(task.get("copies") or COPIES))


def stage_in(spec: dict[str, Any], task: dict[str, Any], site: str, dest: Path) -> list[dict[str, Any]]:
    """Copy every input from a disk RSE of this site; verify its adler32 against Rucio's.

    First all of them at once, each from the first RSE of this site that has it, with one xrdcp (task `copies`
    files at a time); then, one by one, every file that did not arrive whole, from each RSE of this site in
    turn, so that a file's error names each replica tried."""
    dest.mkdir(parents=True, exist_ok=True)
    bases: dict[str, dict[str, Any]] = task.get("rse_bases", {})
    raw_re = re.compile(task["naming"]["raw_file"])
    derived_re = re.compile(task["naming"]["derived_file"])
    here = [r for r in spec.get("rses", []) if bases.get(r, {}).get("site") == site]
    items = []  # (did, size, adler32, target, [(rse, url)])
    for item in spec.get("inputs", []):
        scope, name, size, adler32 = item[:4]
        explicit: dict[str, str] = item[4] if len(item) > 4 else {}
        did = f"{scope}:{name}"
        if not here:
            raise Failure("input", f"{did}: this job's inputs are at {', '.join(spec.get('sites', []))}, "
                                   f"not at {site}")
        target = dest / safe_name(name)
        urls = []
        for rse in here:
            base = bases[rse].get("base")
            url = explicit.get(rse) or (base + lfn_path(scope, name, raw_re, derived_re) if base else None)
            if url is not None:
                urls.append((rse, url))
        items.append((did, size, adler32, target, urls))

    def check(target: Path, size: int, adler32: str) -> tuple[str | None, str]:
        """(error or None, the adler32 of what arrived)"""
        got_size = target.stat().st_size
        if size and got_size != size:
            return f"{got_size} bytes, Rucio says {size}", ""
        got = adler32_file(target)
        if adler32 and got != adler32:
            return f"adler32 {got}, Rucio says {adler32}", got
        return None, got

    records: dict[int, dict[str, Any]] = {}
    errors: dict[int, list[str]] = {i: [] for i in range(len(items))}
    # All at once: the first replica of each file, into a staging directory (a file arrives under its
    # URL's last component; two files with the same one wait for the one-by-one pass).
    batch = [i for i, it in enumerate(items) if it[4]]
    leaves: dict[str, int] = {}
    for i in batch:
        leaves.setdefault(items[i][4][0][1].rsplit("/", 1)[-1], i)
    batch = [i for i in batch if leaves[items[i][4][0][1].rsplit("/", 1)[-1]] == i]
    if batch:
        staging = dest.parent / ".stage-in"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        started = time.monotonic()
        failed, text = xrdcp_many([items[i][4][0][1] for i in batch], f"{staging}/", ["--force"], copies_of(task))
        seconds = time.monotonic() - started
        log(f"read {len(batch)} input(s) with one xrdcp, {copies_of(task)} at a time, in {seconds:.2f} s"
            + (f"; {len(failed)} failed: {text[-600:]}" if failed else ""))
        for k, i in enumerate(batch):
            did, size, adler32, target, urls = items[i]
            rse, url = urls[0]
            got_path = staging / url.rsplit("/", 1)[-1]
            if k in failed or not got_path.is_file():
                errors[i].append(f"{rse}: not copied with the others")
                continue
            error, got = check(got_path, size, adler32)
            if error:
                errors[i].append(f"{rse}: {error}")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            got_path.replace(target)
            log(f"read {did} from {rse} ({target.stat().st_size} bytes, adler32 {got})")
            records[i] = {"did": did, "rse": rse, "site": site, "url": url, "bytes": target.stat().st_size,
                          "adler32": got, "seconds": round(seconds / len(batch), 3)}
        shutil.rmtree(staging, ignore_errors=True)
    # One by one: what the batch did not bring, from each replica in turn.
    for i, (did, size, adler32, target, urls) in enumerate(items):
        if i in records:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        for rse, url in urls:
            started = time.monotonic()
            done = subprocess.run(["xrdcp", "--nopbar", "--force", url, str(target)], capture_output=True, text=True)
            if done.returncode != 0:
                errors[i].append(f"{rse}: xrdcp exit {done.returncode}: {done.stderr.strip()[-300:]}")
                continue
            error, got = check(target, size, adler32)
            if error:
                errors[i].append(f"{rse}: {error}")
                continue
            seconds = time.monotonic() - started
            log(f"read {did} from {rse} ({target.stat().st_size} bytes, {seconds:.2f} s, adler32 {got})")
            records[i] = {"did": did, "rse": rse, "site": site, "url": url, "bytes": target.stat().st_size,
                          "adler32": got, "seconds": round(seconds, 3)}
            break
        else:
            raise Failure("input", f"{did}: could not read it at {site}: " + "; ".join(errors[i] or ["no replica"]))
    return [records[i] for i in range(len(items))]


# --------------------------------------------------------------------------- payload


def group_rss_kb(pgid: int) -> int:
    """Resident set of every process in the payload's process group (the payload and its children)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state ppid pgrp session ... rss is field 24 overall (index 21 here).
        if int(fields[2]) == pgid:
            total += int(fields[21]) * PAGE_KB
    return total


def run_payload(argv: list[str], env: dict[str, str], cwd: Path, memory_mb: int, wall_s: int,
                logs: tuple[Path, Path] | None = None) -> tuple[int, str | None, int]:
    """(exit code, failure kind or None, peak RSS in MB). The payload gets its own process group; its
    stdout and stderr go to `logs` when given (copied back, capped, by `emit_capped`)."""
    out = open(logs[0], "wb") if logs else None  # noqa: SIM115 - closed below
    err = open(logs[1], "wb") if logs else None  # noqa: SIM115
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True, stdout=out, stderr=err)
    finally:
        for fh in (out, err):
            if fh is not None:
                fh.close()
    started = time.monotonic()
    peak_kb = 0
    failure = None

    def forward(signum: int, _frame: Any) -> None:  # the batch system removes the job: stop the payload too
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, forward)
    while proc.poll() is None:
        rss = group_rss_kb(proc.pid)
        peak_kb = max(peak_kb, rss)
        if rss > memory_mb * 1024:
            failure = "memory"
            log(f"payload uses {rss // 1024} MB, more than the {memory_mb} MB requested: stopping it")
        elif time.monotonic() - started > wall_s:
            failure = "walltime"
            log(f"payload ran past the wall time of {wall_s} s: stopping it")
        if failure:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            break
        time.sleep(POLL_S)
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    return code, failure, -(-peak_kb // 1024)  # rounded up: over the request stays over it


class _Values(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_args(tokens: list[str], job: int, inputs: list[str], variables: dict[str, Any]) -> list[str]:
    """The payload's arguments (juno_jobs.splitting.render, repeated here for the same reason as lfn_path):
    a word that is exactly {inputs} becomes one word per input file; {input}, {job}, {nfiles} and the job
    variables are formatted in."""
    values = _Values(variables)
    values.update(job=job, nfiles=len(inputs))
    if inputs:
        values["input"] = inputs[0]
    out: list[str] = []
    for token in tokens:
        if token == "{inputs}":
            out.extend(inputs)
        elif "{" in token or "}" in token:
            out.append(string.Formatter().vformat(token, (), values))
        else:
            out.append(token)
    return out


def payload_argv(task: dict[str, Any], here: Path, args: list[str]) -> list[str]:
    payload = task["payload"]
    if payload["kind"] == "script":
        argv = ["/bin/sh", str(here / Path(payload["path"]).name), *args]
    elif payload["kind"] == "exe":
        exe = here / Path(payload["path"]).name
        exe.chmod(0o755)  # file transfer keeps the bytes, not always the mode
        argv = [str(exe), *args]
    else:
        if not os.access(payload["path"], os.X_OK):
            raise Failure("release", f"executable {payload['path']} not found (or not executable) at this site")
        argv = [payload["path"], *args]
    release = task.get("release")
    if release:
        if not os.path.isdir(release):
            raise Failure("release", f"release {release} not found at this site")
        if os.path.exists(os.path.join(release, "setup.sh")):
            argv = ["/bin/sh", "-c", '. "$JUNO_RELEASE/setup.sh" >&2 && exec "$@"', "juno-payload", *argv]
    return argv


def emit_capped(path: Path, stream: Any, limit: int) -> None:
    """Copy a payload log to our own stdout/stderr, at most `limit` bytes: its head and its tail."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    stream.flush()
    out = stream.buffer if hasattr(stream, "buffer") else stream
    with open(path, "rb") as fh:
        if size <= limit:
            shutil.copyfileobj(fh, out)
        else:
            half = limit // 2
            out.write(fh.read(half))
            out.write(f"\n[juno-wrapper: {size - 2 * half} bytes of this log cut; limit {limit} bytes]\n".encode())
            fh.seek(size - half)
            out.write(fh.read(half))
    out.flush()


def collect_outputs(patterns: list[str], work: Path, dest: Path) -> list[dict[str, Any]]:
    dest.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for pattern in patterns:
        matches = sorted(p for p in glob.glob(pattern, root_dir=work, recursive=True) if (work / p).is_file())
        if not matches:
            raise Failure("outputs", f"output pattern {pattern!r} matched no file in the payload's directory")
        for rel in matches:
            name = rel.replace(os.sep, ".")
            found.setdefault(name, work / rel)
    records = []
    for name, path in sorted(found.items()):
        target = dest / name
        shutil.move(str(path), target)
        records.append({"file": name, "bytes": target.stat().st_size, "adler32": adler32_file(target)})
        log(f"output {name}: {records[-1]['bytes']} bytes, adler32 {records[-1]['adler32']}")
    return records


# --------------------------------------------------------------------------- stage-out


def _split_url(url: str) -> tuple[str, str]:
    rest = url.split("://", 1)[1]
    host, _, path = rest.partition("/")
    return url[: url.index("://") + 3] + host, "/" + path.lstrip("/")


_PROMPT = re.compile(r"^\[[^\]\n]*\] \S* > ")
_NAMED = re.compile(r"Unable to checksum (\S+?);")


def parse_checksum_session(text: str, paths: list[str]) -> dict[str, str | None]:
    """path → adler32 (None: no such file) from an `xrdfs SERVER` session fed 'query checksum PATH' for each
    of `paths` in turn. Each query has one answer, an "adler32 VALUE" or an "[ERROR] ..." line, in order:
    the session's echo of the command is not used (xrdfs 5.8 cuts long lines to "<" + their tail). Paths
    whose answer is another error are left out (asked again). If the answers do not pair up with the paths
    (a count that differs, an error naming another path), only the errors that name their path count."""
    answers: list[str] = []
    for line in text.splitlines():
        while (m := _PROMPT.match(line)) is not None:
            line = line[m.end():]
        if line.startswith(("adler32 ", "[ERROR]")):
            answers.append(line)

    def missing(line: str) -> bool:
        return "[3011]" in line or "no such file" in line.lower()

    named = {m.group(1): line for line in answers if (m := _NAMED.search(line))}
    paired = len(answers) == len(paths) and all(
        (m := _NAMED.search(line)) is None or m.group(1) == path for path, line in zip(paths, answers, strict=True))
    out: dict[str, str | None] = {}
    if not paired:
        return {path: None for path, line in named.items() if path in set(paths) and missing(line)}
    for path, line in zip(paths, answers, strict=True):
        if line.startswith("adler32 "):
            out[path] = line.split()[1].lower().rjust(8, "0")
        elif missing(line):
            out[path] = None
    return out


def checksum_session(server: str, paths: list[str], timeout_s: float) -> tuple[dict[str, str | None], str]:
    """One `xrdfs SERVER` process asked for the adler32 of every path: (parse_checksum_session's answer, the
    session's text). Its stdout and stderr share one pipe: the answers stay after their questions."""
    stdin = "".join(f"query checksum {p}\n" for p in paths)
    # Without HOME (a batch job may have none) xrdfs's session mode aborts (std::logic_error, 5.5 and 5.8);
    # it keeps its history there (HTCondor points TMPDIR at the job's scratch directory).
    env = {**os.environ, "HOME": os.environ.get("HOME") or tempfile.gettempdir()}
    done = subprocess.run(["xrdfs", server], input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout_s, env=env)
    return parse_checksum_session(done.stdout, paths), done.stdout


def storage_adler32s(urls: list[str]) -> dict[str, str | None]:
    """The storage's own adler32 of each file (None: no such file), one `xrdfs` session per server.
    Raises Failure('stageout') for a file the storage did not answer about."""
    by_server: dict[str, dict[str, str]] = {}
    for url in urls:
        server, path = _split_url(url)
        by_server.setdefault(server, {})[path] = url
    out: dict[str, str | None] = {}
    for server, paths in by_server.items():
        try:
            found, text = checksum_session(server, list(paths), 300)
        except subprocess.TimeoutExpired:
            raise Failure("stageout", f"{server} did not answer checksum queries in 300 s") from None
        for path, url in paths.items():
            if path not in found:
                said = [ln for ln in text.splitlines() if path in ln and ln.startswith("[ERROR]")]
                raise Failure("stageout", f"cannot ask {server} about {path}: "
                                          f"{(said or [text.strip()[-300:]])[-1][-300:]}")
            out[url] = found[path]
    return out


def output_rse(out: dict[str, Any], site: str, read_from: list[str]) -> str:
    """The fixed output RSE, or a disk RSE of this site (the one the job read from first)."""
    bases: dict[str, dict[str, Any]] = out["bases"]
    if out["rse"] != "site":
        return str(out["rse"])
    here = sorted(r for r, b in bases.items() if b.get("site") == site)
    if not here:
        raise Failure("stageout", f"site {site} has no disk RSE for outputs: set output.rse in the task file")
    return next((r for r in read_from if r in here), here[0])


def _conflict(url: str, there: str, ours: str) -> Failure:
    return Failure("conflict", f"{url} already holds other bytes (adler32 {there}, this job's file has {ours}): "
                               "nothing was overwritten")


def stage_out(records: list[dict[str, Any]], outdir: Path, task: dict[str, Any], job: int, site: str,
              read_from: list[str]) -> list[dict[str, Any]]:
    """Copy each output to its PFN at the output RSE; never over other bytes. Adds name, rse, url.

    One checksum session asks the storage what is already there (the same adler32 = an earlier attempt's,
    done; another one = a conflict, nothing is copied); one xrdcp per target directory copies the rest,
    task `copies` files at a time (and up to `copies` directories at once), never with --force (a file that
    appeared meanwhile makes its copy fail rather than be overwritten) and with --posc (a broken copy leaves
    nothing); a second session compares the storage's adler32 of each copied file with the worker's. An
    output whose copy failed is copied again alone, for an error of its own."""
    out = task["output"]
    rse = output_rse(out, site, read_from)
    base = out["bases"].get(rse, {}).get("base")
    if not base:
        raise Failure("stageout", f"no write URL for output RSE {rse} in task.json")
    raw_re = re.compile(task["naming"]["raw_file"])
    derived_re = re.compile(task["naming"]["derived_file"])
    # juno-prod names outputs itself (etc/naming.md): the file name is the DID name.
    names = [rec["file"] if out.get("naming") == "file" else f"{out['dataset']}.{job:05d}.{rec['file']}"
             for rec in records]
    urls = [base + lfn_path(out["scope"], name, raw_re, derived_re) for name in names]
    there = storage_adler32s(urls)
    todo: dict[str, list[int]] = {}  # target directory → outputs to copy there
    for i, (rec, name, url) in enumerate(zip(records, names, urls, strict=True)):
        if there[url] == rec["adler32"]:
            log(f"output {name} is already at {rse} with adler32 {there[url]} (an earlier attempt): done")
        elif there[url] is not None:
            raise _conflict(url, there[url], rec["adler32"])
        else:
            todo.setdefault(url.rsplit("/", 1)[0] + "/", []).append(i)
    staging = outdir.parent / ".stage-out"
    shutil.rmtree(staging, ignore_errors=True)
    groups = list(todo.items())

    def copy_group(k: int) -> tuple[set[int], float, str]:
        directory, members = groups[k]
        # A file arrives under its source's name: link each output under its PFN's last component.
        here = staging / str(k)
        here.mkdir(parents=True)
        sources = []
        for i in members:
            link = here / urls[i].rsplit("/", 1)[-1]
            os.link(outdir / records[i]["file"], link)
            sources.append(str(link))
        started = time.monotonic()
        failed, text = xrdcp_many(sources, directory, ["--posc", "--path"], copies_of(task))
        return failed, time.monotonic() - started, text

    copied: dict[int, float] = {}  # output → seconds of its xrdcp (shared by the files of one directory)
    # Outputs in different directories (hashed paths) go by several xrdcp at once, as many as `copies`.
    with ThreadPoolExecutor(max(1, min(copies_of(task), len(groups)))) as pool:
        results = list(pool.map(copy_group, range(len(groups))))
    shutil.rmtree(staging, ignore_errors=True)
    for (directory, members), (failed, seconds, text) in zip(groups, results, strict=True):
        log(f"copied {len(members)} output(s) to {directory} with one xrdcp, {copies_of(task)} at a time, in "
            f"{seconds:.2f} s" + (f"; {len(failed)} failed: {text[-600:]}" if failed else ""))
        for k, i in enumerate(members):
            if k in failed:  # a clear error of its own, from a copy of its own
                cp = subprocess.run(["xrdcp", "--nopbar", "--posc", "--path", str(outdir / records[i]["file"]),
                                     urls[i]], capture_output=True, text=True, timeout=3600)
                if cp.returncode != 0:
                    now = storage_adler32s([urls[i]])[urls[i]]
                    if now == records[i]["adler32"]:
                        log(f"output {names[i]} appeared at {rse} with adler32 {now} meanwhile: done")
                        there[urls[i]] = now
                        continue
                    if now is not None:
                        raise _conflict(urls[i], now, records[i]["adler32"])
                    raise Failure("stageout", f"xrdcp of {records[i]['file']} to {urls[i]} failed (exit "
                                              f"{cp.returncode}): {cp.stderr.strip()[-300:]}")
            copied[i] = seconds / len(members)
    if copied:
        after = storage_adler32s([urls[i] for i in copied])
        for i, seconds in copied.items():
            there[urls[i]] = after[urls[i]]
            if after[urls[i]] != records[i]["adler32"]:
                raise Failure("stageout", f"{urls[i]}: the storage reports adler32 {after[urls[i]]}, the worker "
                                          f"computed {records[i]['adler32']}")
            log(f"staged out {names[i]} to {rse} ({records[i]['bytes']} bytes, {seconds:.2f} s, "
                f"adler32 {after[urls[i]]} on storage)")
    return [{**rec, "scope": out["scope"], "name": name, "rse": rse, "url": url, "storage_adler32": there[url]}
            for rec, name, url in zip(records, names, urls, strict=True)]


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: wrapper.py JOB ATTEMPT REQUEST_MEMORY_MB  (in the job's scratch directory)", file=sys.stderr)
        return 2
    job, attempt, memory_mb = int(argv[1]), int(argv[2]), int(argv[3])
    here = Path.cwd()
    site = this_site()
    result: dict[str, Any] = {"job": job, "attempt": attempt, "site": site, "host": socket.gethostname(),
                              "request_memory_mb": memory_mb, "started": time.time(), "exit_code": None,
                              "failure": None, "message": "", "max_rss_mb": 0, "inputs": [], "outputs": []}
    logs = (here / "payload.out", here / "payload.err")
    limit = LOG_LIMIT
    try:
        task = json.loads((here / "task.json").read_text())
        limit = int(task.get("log_limit", LOG_LIMIT))
        spec = job_spec(here, job)
        log(f"task {task['name']} job {job} attempt {attempt} at site {site}, {memory_mb} MB requested")
        work = here / "work"
        if work.exists():  # a second run of the same attempt (e.g. the batch system restarted it)
            shutil.rmtree(work)
        work.mkdir()
        result["inputs"] = stage_in(spec, task, site, work / "inputs")
        inputs = [f"inputs/{i[1]}" for i in spec.get("inputs", [])]
        args = render_args(list(task.get("arguments", [])), job, inputs, dict(spec.get("vars", {})))
        cmd = payload_argv(task, here, args)
        env = dict(os.environ)
        env.update(task.get("environment", {}))
        env.update({"JUNO_SITE": site, "JUNO_TASK": task["name"], "JUNO_TASK_ID": str(task.get("id", "")),
                    "JUNO_JOB": str(job), "JUNO_ATTEMPT": str(attempt), "JUNO_REQUEST_MEMORY_MB": str(memory_mb),
                    "JUNO_INPUTS": " ".join(inputs),
                    "JUNO_JOBVARS": json.dumps(spec.get("vars", {})), "JUNO_RELEASE": task.get("release") or ""})
        log("running " + " ".join(cmd))
        code, failure, peak = run_payload(cmd, env, work, memory_mb, int(task.get("wall_s", 86400)), logs)
        result["max_rss_mb"] = peak
        result["exit_code"] = code
        log(f"payload exit code {code}, peak resident memory {peak} MB")
        if failure:
            raise Failure(failure, f"payload stopped: {failure} (peak {peak} MB of {memory_mb} MB requested)")
        if code != 0:
            result["failure"] = "payload"
            result["message"] = f"payload exited with code {code}"
        else:
            shutil.rmtree(work / "inputs", ignore_errors=True)  # not outputs: they are in Rucio already
            records = collect_outputs(task.get("outputs", []), work, here / "outputs")
            if records and task.get("output"):
                read_from = [i["rse"] for i in result["inputs"]]
                records = stage_out(records, here / "outputs", task, job, site, read_from)
            result["outputs"] = records
    except Failure as err:
        result["failure"] = err.kind
        result["message"] = str(err)
        log(f"{err.kind} failure: {err}")
    except Exception as err:  # noqa: BLE001 - anything unexpected is still reported, as a wrapper failure
        result["failure"] = "wrapper"
        result["message"] = f"{type(err).__name__}: {err}"
        log(f"wrapper failure: {type(err).__name__}: {err}")
    finally:
        emit_capped(logs[0], sys.stdout, limit)
        emit_capped(logs[1], sys.stderr, limit)
    result["finished"] = time.time()
    if result["failure"] and result["failure"] != "payload":
        result["exit_code"] = EXIT[result["failure"]]
    tmp = here / "result.json.tmp"
    try:
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(here / "result.json")
    except OSError as err:
        log(f"cannot write {here / 'result.json'}: {err}")
        return EXIT["wrapper"]
    return int(result["exit_code"] or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

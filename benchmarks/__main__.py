"""python -m benchmarks [names...] [--quick] [--results DIR] [--workdir DIR] [--keep] [--summary] [--device D]"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import BENCHMARKS, NOT_BUILT

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_TEXT = {"speedup_min": "speedup ≥ {}×", "time_per_image_ratio_max": "time/image ratio ≤ {}×",
               "peak_rss_ratio_max": "peak RSS ratio ≤ {}×", "peak_rss_mb_max": "peak RSS ≤ {} MiB",
               "sweep_to_one_head_ratio_max": "sweep / one head ≤ {}×",
               "ours_seconds_max": "ours ≤ {} s", "accuracy_gap_max": "accuracy gap ≤ {}",
               "one_task_seconds_max": "one more task ≤ {} s", "hundred_tasks_seconds_max": "100 tasks ≤ {} s",
               "status_1000_seconds_max": "`dvc status` at 1,000 tasks ≤ {} s",
               "fewshot_gain_min": "10-shot gain over random init ≥ {}"}


def meets(result: dict, target: dict) -> bool:
    ok = True
    for key, bound in target.items():
        value = result.get(key.rsplit("_", 1)[0])
        if not isinstance(value, (int, float)) or math.isnan(value):
            return False
        ok &= value >= bound if key.endswith("_min") else value <= bound
    return bool(ok)


def run_one(name: str, quick: bool, results: Path, workdir: Path | None, keep: bool) -> dict:
    from benchmarks.common import LoadMeter, machine

    module = importlib.import_module(f"benchmarks.{name}")
    work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=workdir))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info, meter = machine(), LoadMeter()
    try:
        result = module.run(work, quick)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    out = {"name": name, "quick": quick, "started_at": started, "target": module.TARGET,
           "meets_target": meets(result, module.TARGET), **result,
           "machine": info, "machine_load": meter.read()}
    if not out["baseline"].get("seconds") or not out["ours"].get("seconds"):
        raise RuntimeError(f"{name}: baseline and ours need positive seconds")
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(out, indent=2, default=_json) + "\n")
    return out


def _json(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _target(target: dict) -> str:
    return ", ".join(TARGET_TEXT[k].format(v) for k, v in target.items())


def _fmt(x, digits: int = 2) -> str:
    return "—" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def details(r: dict) -> list[str]:
    """A few lines per benchmark beyond the table: what the ratio is made of."""
    g, name = r.get, r["name"]
    out = [f"- workload: {g('workload', '—')}"]
    if name == "head_vs_frozen":
        raw = r["ours"].get("accuracy_without_standardize", float("nan"))
        out.append(f"- test accuracy: baseline {r['baseline']['accuracy']:.3f}, ours {r['ours']['accuracy']:.3f} "
                   f"(ours without standardisation {raw:.3f})")
        out.append(f"- one-time extraction {g('extraction_seconds', 0):.2f} s ({g('extraction_images')} images); "
                   f"speedup including it {g('speedup_including_extraction', float('nan')):.2f}×")
        if g("ours_single_thread"):
            out.append(f"- ours with torch.set_num_threads(1): {r['ours_single_thread']['seconds']:.3f} s "
                       f"(speedup {g('speedup_single_thread', float('nan')):.1f}×)")
    elif name == "extraction":
        ips = {k: r[k]["images_per_second"] for k in ("baseline", "ours", "model_only", "model_only_naive",
                                                      "ours_float32", "ours_batch_32", "ours_num_workers_2")
               if k in r}
        out.append("- images/s: " + ", ".join(f"{k} {v:.2f}" for k, v in ips.items()))
        if g("agreement"):
            a = r["agreement"]
            out.append(f"- ours computes in {r['ours'].get('compute_dtype')}, {r['ours'].get('memory_format')}; "
                       f"feature cosine similarity to the naive fp32 loop: min {a['cosine_min']:.4f}, "
                       f"mean {a['cosine_mean']:.5f}")
        out.append(f"- ours at {g('fraction_of_model_only', float('nan')):.0%} of model-only throughput, "
                   f"the naive loop at {g('baseline_fraction_of_model_only', float('nan')):.0%}")
    elif name == "task_reuse":
        out.append(f"- {g('images')} images; first run: {', '.join(r['baseline'].get('stages_run', []))} "
                   f"(features stage {r['baseline'].get('features_stage_seconds', float('nan')):.1f} s)")
        out.append(f"- new task: {', '.join(r['ours'].get('stages_run', []))}")
        if r["ours"].get("runs"):
            out.append("- new 5-class tasks, one after another (ours: the median): " + ", ".join(
                f"{x['task']} {x['seconds']:.2f} s" for x in r["ours"]["runs"])
                + f"; the slowest gives {g('speedup_slowest_new_task', float('nan')):.2f}×")
        if r.get("ours_binary_task"):
            b = r["ours_binary_task"]
            out.append(f"- a two-class new task instead: {b['seconds']:.1f} s (speedup {b['speedup']:.2f}×)")
        for side in ("baseline", "ours", "ours_binary_task"):
            i = (r.get(side) or {}).get("train_head_internals")
            if i:
                computed = r[side].get("task_compute_seconds")
                out.append(f"- {side}: " + (f"computing the task {computed:.2f} s, of which " if computed else "")
                           + f"our heads {i['heads_train_seconds']:.2f} s, "
                           f"scikit-learn reference {i['reference_fit_seconds']:.2f} s")
    elif name == "many_tasks":
        t, h, o, st = r["ten_tasks"], r["hundred_tasks"], r["ours"], r["status"]
        out.append(f"- setup (not in the ratio): the first `dvc repro` {r['setup']['seconds']:.1f} s "
                   f"({r['setup']['images_extracted']} images extracted)")
        out.append(f"- adding {t['added']} tasks ({t['tasks']} in all): {t['seconds']:.1f} s, "
                   f"{t['seconds_per_added_task']:.2f} s per added task (their compute "
                   f"{t['task_compute_seconds']:.1f} s)")
        out.append(f"- {h['tasks']} tasks, all computed (task cache emptied): {h['seconds']:.1f} s, "
                   f"{h['seconds_per_task']:.2f} s per task (their compute {h['task_compute_seconds']:.1f} s, "
                   f"median {h['task_compute_seconds_median']:.2f} s a task)")
        out.append("- one task added (ours: the median): " + ", ".join(
            f"to {x['tasks'] - 1} {x['seconds']:.2f} s (compute {x['task_compute_seconds']:.2f})"
            for x in o["runs"]))
        out.append("- `dvc status`: " + ", ".join(
            f"{k.split('_', 1)[1]} tasks {v['seconds']:.2f} s" for k, v in st.items() if k.startswith("tasks_")))
        rp, big = st["repro_1000"], [v for k, v in st.items() if k.startswith("tasks_")][-1]
        if not rp["ran"]:
            fewer, seeded = big["lock_of_fewer"], rp["seeded"]
            out.append(f"- no {big['lock_tasks']}-task compute ({rp['why']}): against the lock of "
                       f"{fewer['lock_tasks']} `dvc status` took {fewer['seconds']:.2f} s; with the "
                       f"{seeded['entries_seeded']} new tasks' cache entries seeded (copies, no compute) "
                       f"`dvc repro` published all {seeded['reused']} in {seeded['seconds']:.1f} s ("
                       + ", ".join(f"{k} {v:.1f}" for k, v in seeded["stage_seconds"].items())
                       + f"), and `dvc status` then took {big['seconds']:.2f} s")
        s = r["time_split"]
        out.append(f"- where one added task's {s['repro_seconds']:.2f} s go: its compute "
                   f"{s['new_task_compute_seconds']:.2f}, tasks stage with every task reused "
                   f"{s['tasks_stage_all_reused_seconds']:.2f} (imports {s['tasks_stage_import_seconds']:.2f}, "
                   f"fingerprints {s['tasks_stage_fingerprint_seconds']:.2f}, publishing "
                   f"{s['tasks_stage_publish_seconds']:.2f}), validate {s['validate_stage_seconds']:.2f}, report "
                   f"{s['report_stage_seconds']:.2f}, DVC's remainder {s['dvc_remainder_seconds']:.2f} "
                   f"(`dvc version` alone {s['dvc_version_seconds']:.2f})")
        for side in ("baseline", "ours"):
            if r[side].get("stage_seconds"):
                out.append(f"- {side} seconds per stage: "
                           + ", ".join(f"{k} {v:.1f}" for k, v in r[side]["stage_seconds"].items()))
    elif name == "head_sweep":
        out.append(f"- {r['ours']['heads']} heads together {r['ours']['seconds']:.3f} s, one after another "
                   f"{r['baseline']['seconds']:.3f} s, one head alone {r['one_head']['seconds']:.3f} s: "
                   f"sweep / one head {r['sweep_to_one_head_ratio']:.2f}× "
                   f"(CPU time {r['cpu_sweep_to_one_head_ratio']:.2f}×)")
        m = r["mlp_diagnostic"]
        out.append(f"- mlp heads: {m['heads']} together {m['together_seconds']:.2f} s vs one after another "
                   f"{m['one_after_another_seconds']:.2f} s ({m['speedup']:.2f}×); same predictions as alone: "
                   f"{r['same_predictions']} (max logit difference {r['max_logit_difference']:.1e})")
    elif name == "incremental":
        out.append(f"- ours extracted {r['ours'].get('images_extracted')} and reused "
                   f"{r['ours'].get('images_reused')}; the baseline extracted "
                   f"{r['baseline'].get('images_extracted')}; bit-identical feature sets: {g('bit_identical')}")
    elif name == "scaling":
        out.append("- | n | seconds | s/image | images/s | peak RSS MiB | RSS before run MiB |")
        out.append("  |---:|---:|---:|---:|---:|---:|")
        for pt in g("points", []):
            out.append(f"  | {pt['n']} | {pt['seconds']:.2f} | {pt['seconds_per_image'] * 1000:.2f} ms | "
                       f"{pt['images_per_second']:.1f} | {pt['peak_rss_mb']:.0f} | "
                       f"{pt.get('rss_before_run_mb', float('nan')):.0f} |")
    elif name == "head_scale":
        out.extend(f"- {n}" for n in r["notes"])
    elif name == "model_zoo":
        out.append(f"- images/s: timm ViT-S/16 {r['ours']['images_per_second']:.1f}, with the DINOv2 readout "
                   f"{r['ours_dinov2_readout']['images_per_second']:.1f}; torchvision ResNet-50 "
                   f"{r['baseline']['images_per_second']:.1f} ({r['compute_dtype']})")
    elif name == "transfer":
        for ds, d in r["datasets"].items():
            z = d["sizes"]
            out.append(f"- {ds}: source {z['source_train']} train / {z['source_val']} val, SimCLR "
                       f"{z['simclr_images']} unlabelled, target {z['target_train']} / {z['target_val']} / "
                       f"{z['target_test']}; epochs {d['epochs']}; {d['shots']}-shot over "
                       f"{len(d['shot_seeds'])} draws")
            out.append("  | configuration | 10-shot | vs random | full data | vs random | pretrain s | "
                       "extract s |")
            out.append("  |---|---:|---:|---:|---:|---:|---:|")
            for k, c in d["configurations"].items():
                out.append(f"  | {k} | {c['fewshot_mean']:.3f} ± {c['fewshot_std']:.3f} | "
                           f"{c['fewshot_gap_to_random']:+.3f} | {c['full_accuracy']:.3f} | "
                           f"{c['full_gap_to_random']:+.3f} | {c['pretrain_seconds']:.0f} | "
                           f"{c['extract_seconds']:.1f} |")
    elif name == "prepare_memory":
        ours, tenth, base = r["ours"], r["ours_at_tenth"], r["baseline"]
        out.append(f"- peak RSS MiB: ours {ours['peak_rss_mb']:.0f} (at n/10: {tenth['peak_rss_mb']:.0f}), "
                   f"load-all baseline {base['peak_rss_mb']:.0f}; before the run {ours['rss_before_run_mb']:.0f}")
    return out


def summary(results: Path) -> tuple[str, str]:
    """(the table, the whole summary.md) from every result JSON in `results`."""
    found = [json.loads((results / f"{n}.json").read_text()) for n in BENCHMARKS
             if (results / f"{n}.json").is_file()]
    rows = ["| benchmark | baseline s | ours s | speedup | measured | target | met |",
            "|---|---:|---:|---:|---|---|---|"]
    for r in found:
        measured = f"{r['speedup']:.2f}×"
        if r["name"] == "scaling":
            measured = (f"time/image {r['time_per_image_ratio']:.2f}×, "
                        f"peak RSS {r['peak_rss_ratio']:.2f}× (n {r['points'][0]['n']}→{r['points'][-1]['n']})")
        elif r["name"] == "extraction":
            measured += f", {r['fraction_of_model_only']:.0%} of model-only"
        elif r["name"] == "prepare_memory":
            measured = f"peak RSS {r['peak_rss_mb']:.0f} MiB (load-all {r['baseline']['peak_rss_mb']:.0f} MiB)"
        elif r["name"] == "head_sweep":
            measured += f", sweep / one head {r['sweep_to_one_head_ratio']:.2f}×"
        elif r["name"] == "head_scale":
            measured = (f"ours {r['ours_seconds']:.1f} s, accuracy {r['ours']['test_accuracy']:.4f} vs "
                        f"{r['baseline']['test_accuracy']:.4f} (gap {r['accuracy_gap']:.4f})")
        elif r["name"] == "many_tasks":
            big = [k for k in r["status"] if k.startswith("tasks_")][-1].split("_", 1)[1]
            measured = (f"+1 task {r['one_task_seconds']:.2f} s, {r['hundred_tasks']['tasks']} tasks "
                        f"{r['hundred_tasks_seconds']:.0f} s, `dvc status` at {big} tasks "
                        f"{r['status_1000_seconds']:.2f} s")
        elif r["name"] == "model_zoo":
            measured = (f"ViT-S/16 {r['ours']['images_per_second']:.1f} vs ResNet-50 "
                        f"{r['baseline']['images_per_second']:.1f} images/s (time/image "
                        f"{r['time_per_image_ratio']:.2f}×)")
        elif r["name"] == "transfer":
            where = "Fashion-MNIST" if "fashion_mnist" in r["datasets"] else "digits; Fashion-MNIST skipped"
            measured = (f"10-shot {r['ours']['fewshot_mean']:.3f} vs random init "
                        f"{r['baseline']['fewshot_mean']:.3f} ({where})")
        quick = " (quick)" if r.get("quick") else ""
        rows.append(f"| {r['name']}{quick} | {r['baseline']['seconds']:.2f} | {r['ours']['seconds']:.3f} | "
                    f"{r['speedup']:.2f}× | {measured} | {_target(r['target'])} | "
                    f"{'yes' if r['meets_target'] else 'NO'} |")
    for name, why in NOT_BUILT.items():
        rows.append(f"| {name} | — | — | — | — | — | {why} |")
    table = "\n".join(rows)

    lines = ["# Benchmark summary", "",
             "Written by `python -m benchmarks` from the JSON files beside this one "
             "(`speedup` = baseline seconds / ours seconds; descriptions of what ran are in each JSON). "
             "Not timed tests; CI does not run them.", "", table, ""]
    if found:
        m = found[-1]["machine"]
        gpu = m["gpu"]["name"] if m.get("gpu") else "none"
        wall = sum(r.get("machine_load", {}).get("wall_seconds", 0) for r in found)
        lines += ["## Machine", "",
                  f"- CPU: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable, torch threads "
                  f"{m['torch_threads']}), {m['memory_gb']} GiB RAM; GPU: {gpu}",
                  f"- torch {m['torch']}, torchvision {m['torchvision']}, Python {m['python']}, {m['platform']}",
                  f"- run started {found[0].get('started_at')}; the benchmarks took {wall / 60:.1f} min in all",
                  ""]
        loads = [(r["name"], r["machine_load"]) for r in found if r.get("machine_load")]
        lines += ["## Load", ""]
        if any((ld.get("others_avg_cores") or 0) >= 0.2 for _, ld in loads):
            lines.append("The machine was **shared and loaded** while these ran (other people's tests and "
                         "pipelines): CPU time used by other processes, as average cores busy out of "
                         f"{m['usable_cores']}: " + ", ".join(f"{n} {ld['others_avg_cores']:.2f}"
                                                              for n, ld in loads)
                         + ". Absolute seconds are noisy and slower than on an idle machine; each ratio "
                           "compares runs made side by side within one benchmark.")
        else:
            lines.append("Other processes used little CPU while these ran (machine_load in each JSON).")
        lines.append("")
        lines += ["## Details", ""]
        seen: set[str] = set()
        for r in found:
            lines += [f"### {r['name']}", ""] + details(r)
            for note in r.get("notes", []):
                if note not in seen:
                    seen.add(note)
                    lines.append(f"- note: {note}")
            lines.append("")
    lines += ["## Not built", ""]
    for name, why in NOT_BUILT.items():
        lines.append(f"- **{name}**: {why}; left out of the suite.")
    return table, "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name", help=f"benchmarks to run (default all: "
                        f"{', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true", help="a much smaller smoke run (numbers meaningless)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON files go")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary data folders")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--progress", action="store_true", help="show the stages' progress bars")
    parser.add_argument("--device", default="cpu", help="extraction only: the device it compares on (e.g. cuda; "
                        "put the JSON under a --results folder named for the GPU)")
    parser.add_argument("--summary", action="store_true",
                        help="only rewrite summary.md from the JSON files already in --results")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    if args.summary:
        table, text = summary(args.results)
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "summary.md").write_text(text)
        print(table)
        return 0
    os.environ["TRANSFERLAB_BENCH_DEVICE"] = args.device
    if not args.progress:
        os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    failed, start = [], time.perf_counter()
    for name in args.names or BENCHMARKS:
        t = time.perf_counter()
        print(f"[benchmarks] {name}{' (quick)' if args.quick else ''} ...", flush=True)
        try:
            r = run_one(name, args.quick, args.results, args.workdir, args.keep)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            print(f"[benchmarks] {name}: FAILED after {time.perf_counter() - t:.0f}s", flush=True)
            continue
        print(f"[benchmarks] {name}: speedup {r['speedup']:.2f}x in {time.perf_counter() - t:.0f}s", flush=True)
    table, text = summary(args.results)
    if args.results.is_dir():
        (args.results / "summary.md").write_text(text)
    print()
    print(table)
    print(f"\n[benchmarks] {len(args.names or BENCHMARKS) - len(failed)} ran in "
          f"{time.perf_counter() - start:.0f}s; results in {args.results}", flush=True)
    if failed:
        print(f"[benchmarks] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

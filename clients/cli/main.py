"""`trainyard`: the command-line client.

Exit codes: 0 success; 1 a request failed (the message says why); 2 bad usage;
3 the followed job ended failed or cancelled; 4 detached from a job with Ctrl-C
(it keeps running: re-attach with `trainyard jobs watch JOB`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from trainyard.cli import display
from trainyard.cli.display import console
from trainyard.errors import FailedPrecondition, InvalidArgument, TrainyardError
from trainyard.sdk import Client

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_JOB_FAILED, EXIT_DETACHED = 0, 1, 2, 3, 4
PREFERENCES = ("performance_first", "balance", "accuracy_first")


def _client(args) -> Client:
    return Client(args.dataset_address, args.scheduler_address, api_key=args.api_key)


# dev and demo --------------------------------------------------------------------
def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def cmd_dev_up(args) -> int:
    from trainyard.stack.local import LocalStack, StackSettings

    settings = StackSettings.from_env()
    if args.data_dir:
        settings.data_dir = Path(args.data_dir)
    settings.tls = settings.tls or args.tls or args.mtls
    settings.mtls = settings.mtls or args.mtls
    stack = LocalStack(settings)
    signal.signal(signal.SIGTERM, _interrupt)  # stop cleanly on SIGTERM too, not only Ctrl-C
    with console.status("starting the S3 server and the services…"):
        stack.start()
    table = display.Table(title="Trainyard local stack")
    table.add_column("component")
    table.add_column("address")
    table.add_row("object store (S3)", f"http://{stack.s3_config.endpoint}  bucket {stack.s3_config.bucket}")
    for name in ("dataset", "scheduler", "trainer"):
        table.add_row(f"{name} service (gRPC)", stack.address(name))
    table.add_row("your API key (tenant default)", f"{stack.api_key_file}  (the CLI and SDK find it)")
    if stack.certificates is not None:
        table.add_row("TLS" + (" with client certificates" if settings.mtls else ""), f"CA {stack.certificates.ca}")
    table.add_row("data and logs", str(stack.data_dir))
    console.print(table)
    console.print("Ready. Press Ctrl-C to stop.")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping…"):
            stack.stop()
    console.print("stopped")
    return EXIT_OK


# API keys (an operator's command: it edits the key file the services read) -----
def _key_store(args):
    from trainyard.auth import KeyStore

    default = Path(os.environ.get("TRAINYARD_DATA_DIR", ".trainyard")) / "api-keys.json"
    return KeyStore(Path(args.keys_file or os.environ.get("TRAINYARD_API_KEYS_FILE") or default))


def cmd_keys_create(args) -> int:
    record, key = _key_store(args).create(args.tenant, args.name, admin=args.admin)
    console.print(f"created key [bold]{record.id}[/] for tenant [bold]{record.tenant}[/]"
                  f"{' (admin)' if record.admin else ''}; it is shown once, store it now:")
    print(key)
    return EXIT_OK


def cmd_keys_list(args) -> int:
    table = display.Table(title=f"API keys in {_key_store(args).path}")
    for column in ("id", "tenant", "name", "admin", "created", "revoked"):
        table.add_column(column)
    for k in _key_store(args).list():
        table.add_row(k.id, k.tenant, k.name, "yes" if k.admin else "", display.when(k.created),
                      display.when(k.revoked) if k.revoked else "")
    console.print(table)
    return EXIT_OK


def cmd_keys_revoke(args) -> int:
    record = _key_store(args).revoke(args.key_id)
    console.print(f"revoked key {record.id} of tenant {record.tenant}; services refuse it within a second")
    return EXIT_OK


def cmd_demo(args) -> int:
    from trainyard.cli.demo import run_demo

    return run_demo(Path(args.data_dir), max_minutes=args.max_minutes)


# datasets ------------------------------------------------------------------------
def cmd_dataset_create(args) -> int:
    ds = _client(args).create_dataset(args.name, args.description)
    if args.json:
        display.print_json(ds)
    else:
        console.print(f"created dataset {ds.display_name} ({ds.id})")
    return EXIT_OK


def cmd_dataset_list(args) -> int:
    datasets = _client(args).list_datasets()
    if args.json:
        display.print_json(datasets)
        return EXIT_OK
    table = display.Table(title="Datasets")
    for column in ("id", "name", "images", "labeled", "versions"):
        table.add_column(column)
    for d in datasets:
        table.add_row(d.id, d.display_name, str(d.image_count), str(d.labeled_image_count), str(d.version_count))
    console.print(table)
    return EXIT_OK


def cmd_dataset_import(args) -> int:
    """Import a folder of <label>/<image>, a zip of the same layout, or an ExeML manifest (.json/.jsonl)."""
    client = _client(args)
    source = Path(args.source)
    if not source.exists():
        console.print(f"[red]{source} does not exist[/]")
        return EXIT_USAGE
    try:
        client.get_dataset(args.dataset)
    except TrainyardError:
        client.create_dataset(args.dataset)
        console.print(f"created dataset {args.dataset}")
    totals = {"stored": 0, "duplicate": 0, "rejected": 0}
    rejected = []

    def count(summary) -> None:
        totals["stored"] += summary.stored
        totals["duplicate"] += summary.duplicates
        totals["rejected"] += summary.rejected
        rejected.extend(r for r in summary.results if r.reason)

    if source.is_dir():
        with display.Progress(console=console) as progress:
            task = progress.add_task("uploading", total=None)

            def on_batch(response, done, total):
                count(response)
                progress.update(task, completed=done, total=total)

            client.upload_folder(args.dataset, source, on_batch=on_batch)
    elif source.suffix.lower() == ".zip":
        with console.status(f"uploading {source.name}…"):
            for response in client.upload_zip(args.dataset, source):
                count(response)
    elif source.suffix.lower() in (".json", ".jsonl", ".manifest"):
        with console.status(f"importing {source.name}…"):
            for response in client.import_manifest(args.dataset, source):
                count(response)
    else:
        console.print(f"[red]{source}: give a folder, a .zip or a manifest (.json/.jsonl)[/]")
        return EXIT_USAGE
    console.print(f"{totals['stored']} stored, {totals['duplicate']} duplicates, {totals['rejected']} rejected")
    for r in rejected[:20]:
        console.print(f"  [red]rejected[/] {r.file_name}: {r.reason}")
    return EXIT_OK


def cmd_dataset_check(args) -> int:
    report = _client(args).check_trainability(args.dataset)
    if args.json:
        display.print_json(report)
        return EXIT_OK if report.trainable else EXIT_ERROR
    table = display.Table(title=f"Labeled images of {args.dataset}")
    table.add_column("class")
    table.add_column("images", justify="right")
    for label, count in report.classes.items():
        table.add_row(label, str(count))
    console.print(table)
    if report.unlabeled_image_count:
        console.print(f"{report.unlabeled_image_count} unlabeled images (not used for training)")
    if report.trainable:
        console.print("[green]ready to train[/]")
        return EXIT_OK
    console.print("[red]not ready to train:[/]")
    for violation in report.violations:
        console.print(f"  • {violation}")
    return EXIT_ERROR


def cmd_dataset_stats(args) -> int:
    report = _client(args).check_trainability(args.dataset)
    if args.json:
        display.print_json(report)
        return EXIT_OK
    table = display.Table(title=f"Classes of {args.dataset}")
    table.add_column("class")
    table.add_column("labeled images", justify="right")
    table.add_column("share", justify="right")
    labeled = sum(report.classes.values())
    for label, count in report.classes.items():
        table.add_row(label, str(count), f"{count / max(labeled, 1):.1%}")
    console.print(table)
    console.print(f"{labeled} labeled, {report.unlabeled_image_count} unlabeled")
    return EXIT_OK


def cmd_dataset_images(args) -> int:
    images = _client(args).list_images(args.dataset, args.label, args.unlabeled)
    if args.json:
        console.print_json(data=[_dict(i) for i in images])
        return EXIT_OK
    table = display.Table(title=f"Images of {args.dataset}")
    for column in ("id", "file", "label", "format", "size"):
        table.add_column(column)
    for i in images:
        table.add_row(i.id[:16] + "…", i.file_name, i.label or "[dim]unlabeled[/]", i.format, f"{i.width}×{i.height}")
    console.print(table)
    return EXIT_OK


def cmd_dataset_label(args) -> int:
    labels = {}
    for item in args.assignments:
        image_id, sep, label = item.partition("=")
        if not sep:
            console.print(f"[red]{item!r}: write IMAGE_ID=LABEL (empty label removes it)[/]")
            return EXIT_USAGE
        labels[image_id] = label
    changed = _client(args).set_labels(args.dataset, labels)
    console.print(f"{changed} label(s) changed")
    return EXIT_OK


def cmd_dataset_rename_class(args) -> int:
    changed = _client(args).rename_class(args.dataset, args.label, args.new_label)
    console.print(f"{changed} image(s) relabeled {args.label!r} → {args.new_label!r}")
    return EXIT_OK


def cmd_dataset_diff(args) -> int:
    diff = _client(args).diff_versions(args.dataset, args.base, args.target)
    if args.json:
        console.print_json(data=_dict(diff))
        return EXIT_OK
    console.print(f"{args.base} → {args.target}: {len(diff.added_image_ids)} added, {len(diff.removed_image_ids)} removed, "
                  f"{len(diff.relabeled)} relabeled")
    table = display.Table(title="Class counts")
    for column in ("class", args.base, args.target, "change"):
        table.add_column(column)
    for c in diff.class_changes:
        table.add_row(c.label, str(c.base_count), str(c.target_count), f"{c.target_count - c.base_count:+d}")
    console.print(table)
    return EXIT_OK


def cmd_dataset_export(args) -> int:
    data = _client(args).export_manifest(args.dataset, args.version)
    if args.output == "-":
        sys.stdout.write(data.decode())
    else:
        Path(args.output).write_bytes(data)
        console.print(f"wrote {len(data.splitlines())} samples to {args.output}")
    return EXIT_OK


def cmd_dataset_delete(args) -> int:
    _client(args).delete_dataset(args.dataset)
    console.print(f"deleted {args.dataset} (objects kept for the retention period; running jobs finish)")
    return EXIT_OK


def cmd_dataset_publish(args) -> int:
    v = _client(args).publish_version(args.dataset, args.name, args.ratio, args.seed)
    if args.json:
        display.print_json(v)
    else:
        console.print(f"published version {v.name}: {v.train_count} training, {v.validation_count} validation images")
    return EXIT_OK


def cmd_dataset_versions(args) -> int:
    versions = _client(args).list_versions(args.dataset)
    if args.json:
        display.print_json(versions)
        return EXIT_OK
    table = display.Table(title=f"Versions of {args.dataset}")
    for column in ("version", "ratio", "seed", "train", "validation", "classes", "parent", "created"):
        table.add_column(column)
    for v in versions:
        table.add_row(v.name, v.train_ratio, str(v.seed), str(v.train_count), str(v.validation_count),
                      str(len(v.classes)), v.parent_version, v.create_time.strftime("%Y-%m-%d %H:%M:%S") if v.create_time else "")
    console.print(table)
    return EXIT_OK


# training ------------------------------------------------------------------------
def cmd_train(args) -> int:
    client = _client(args)
    accept = args.accept_free_terms
    flavors = {f.id: f for f in client.list_flavors()}
    flavor_id = args.flavor or next((f.id for f in flavors.values() if f.kind == "free"), "")
    flavor = flavors.get(flavor_id)
    if flavor is not None and flavor.kind == "free" and not accept:
        console.print(f"[bold]{flavor.display_name}[/] terms:\n{flavor.terms}")
        if not sys.stdin.isatty():
            console.print("[red]the free flavor needs your agreement: pass --accept-free-terms[/]")
            return EXIT_USAGE
        accept = console.input("I have read and agree to the above [y/N]: ").strip().lower() in ("y", "yes")
        if not accept:
            return EXIT_USAGE
    job = client.create_training_job(
        args.dataset, dataset_version=args.version, new_version_name=args.new_version, train_ratio=args.ratio,
        seed=args.seed, incremental_model_version=args.incremental, max_duration_minutes=args.max_minutes,
        preference=args.preference, flavor=flavor_id, accept_free_terms=accept, max_epochs=args.max_epochs,
    )
    console.print(f"job [bold]{job.id}[/] created on dataset version {job.parameters.dataset_version}")
    if args.detach:
        console.print(f"follow it with: trainyard jobs watch {job.id}")
        return EXIT_OK
    return follow(client, job.id)


def follow(client: Client, job_id: str, after: int = 0) -> int:
    """Show a job live until it ends; Ctrl-C detaches and the job goes on (S8)."""
    try:
        with display.JobView() as view:
            for event in client.watch(job_id, after):
                view.show(event)
    except KeyboardInterrupt:
        console.print(f"\ndetached; the job keeps running. Re-attach with: trainyard jobs watch {job_id}")
        return EXIT_DETACHED
    job = client.get_job(job_id)
    if job.state != "completed":
        console.print(f"[red]job {job.state}[/]: {job.error_message or display.words(job.stop_reason)}")
        return EXIT_JOB_FAILED
    for table in display.evaluation_tables(client.get_model_version(job.dataset_id, job.model_version)):
        console.print(table)
    return EXIT_OK


def cmd_jobs_list(args) -> int:
    jobs = _client(args).list_jobs(args.dataset or "")
    if args.json:
        display.print_json(jobs)
    else:
        console.print(display.job_table(jobs))
    return EXIT_OK


def cmd_jobs_show(args) -> int:
    job = _client(args).get_job(args.job)
    if args.json:
        display.print_json(job)
        return EXIT_OK
    table = display.Table(title=f"Training job {job.id}")
    table.add_column("field")
    table.add_column("value")
    rows = [("dataset", job.dataset_id), ("state", job.state), ("stop reason", display.words(job.stop_reason)),
            ("error", job.error_message), ("queue position", str(job.queue_position or "")), ("waiting because", job.wait_reason),
            ("model version", job.model_version), ("duration limit", f"{job.duration_limit.total_seconds() / 60:g} min"),
            ("billed", f"{job.billed_seconds:.0f} s, cost {job.cost:.4f}"), ("events", str(job.last_sequence))]
    rows += [(name.replace("_", " "), str(value)) for name, value in display.plain(job.parameters).items()]
    for name, value in rows:
        if value:
            table.add_row(name, value)
    console.print(table)
    return EXIT_OK


def cmd_jobs_watch(args) -> int:
    return follow(_client(args), args.job, args.after)


def cmd_jobs_cancel(args) -> int:
    job = _client(args).cancel_job(args.job)
    console.print(f"job {job.id}: {job.state}")
    return EXIT_OK


def cmd_flavors(args) -> int:
    flavors = _client(args).list_flavors()
    if args.json:
        display.print_json(flavors)
        return EXIT_OK
    table = display.Table(title="Compute flavors")
    for column in ("id", "name", "kind", "price/h", "capacity", "in use", "queued", "quota/tenant"):
        table.add_column(column)
    for f in flavors:
        table.add_row(f.id, f.display_name, display.words(f.kind),
                      f"{f.price_per_hour:.2f}", str(f.capacity), str(f.slots_in_use), str(f.queue_length),
                      str(f.tenant_concurrency_quota or "∞"))
    console.print(table)
    return EXIT_OK


# models --------------------------------------------------------------------------
def cmd_models_list(args) -> int:
    client = _client(args)
    versions = client.list_model_versions(args.dataset)
    if args.json:
        display.print_json(versions)
        return EXIT_OK
    console.print(display.models_table(args.dataset, versions, client.best_model_version(args.dataset)))
    return EXIT_OK


def cmd_models_show(args) -> int:
    mv = _client(args).get_model_version(args.dataset, args.version)
    if args.json:
        display.print_json(mv)
        return EXIT_OK
    for table in display.evaluation_tables(mv):
        console.print(table)
    console.print(display.confusion_table(mv))
    return EXIT_OK


def cmd_models_report(args) -> int:
    import json

    from trainyard.cli import report

    client = _client(args)
    mv = client.get_model_version(args.dataset, args.version)
    metrics = json.loads(client.download_artifact(args.dataset, args.version, "metrics.json"))
    plots = {name: client.download_artifact(args.dataset, args.version, name) for name in ("confusion_matrix.png", "curves.png")}
    output = Path(args.output or f"{mv.dataset_id}-{mv.version}.html")
    output.write_text(report.render(f"Model version {mv.version} of {args.dataset}", display.summary_rows(mv), metrics, plots))
    console.print(f"wrote {output}")
    return EXIT_OK


def cmd_models_predict(args) -> int:
    from trainyard.sdk.client import IMAGE_SUFFIXES

    paths: list[Path] = []
    for item in map(Path, args.images):
        paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if item.is_dir() else [item]
    if not paths:
        console.print("[red]no images given[/]")
        return EXIT_USAGE
    client = _client(args)
    results = []
    for start in range(0, len(paths), 64):
        batch = paths[start:start + 64]
        predictions = client.predict(args.dataset, args.version, [p.read_bytes() for p in batch], args.top_k)
        results += list(zip(batch, predictions, strict=True))
    if args.json:
        console.print_json(data=[{"file": str(p), "labels": [{"label": label, "score": score} for label, score in pred]}
                                 for p, pred in results])
        return EXIT_OK
    table = display.Table(title=f"Predictions of {args.dataset} {args.version}")
    table.add_column("file")
    table.add_column("top labels (score)")
    for path, pred in results:
        table.add_row(str(path), "  ".join(f"{label} ({score:.3f})" for label, score in pred))
    console.print(table)
    return EXIT_OK


def cmd_models_export(args) -> int:
    from trainyard.artifacts import ARTIFACTS

    client = _client(args)
    folder = Path(args.output or f"{args.dataset}-{args.version}")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        (folder / name).write_bytes(client.download_artifact(args.dataset, args.version, name))
    console.print(f"wrote {len(ARTIFACTS)} artifacts to {folder}/ (model.torchscript.pt runs with plain torch.jit.load)")
    return EXIT_OK


def _dict(message) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trainyard", description="Train, evaluate and version image classifiers.",
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--dataset-address", help="dataset service host:port (default: env or the local stack)")
    p.add_argument("--scheduler-address", help="scheduler host:port (default: env or the local stack)")
    p.add_argument("--api-key", help="API key (default: TRAINYARD_API_KEY, else the local stack's key)")
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="the local stack").add_subparsers(dest="dev", required=True)
    up = dev.add_parser("up", help="start S3 and the three services on loopback until Ctrl-C")
    up.add_argument("--data-dir", help="data directory (default TRAINYARD_DATA_DIR or .trainyard)")
    up.add_argument("--tls", action="store_true", help="TLS on every endpoint, with a development CA in <data-dir>/tls")
    up.add_argument("--mtls", action="store_true", help="TLS and client certificates required (mutual TLS)")
    up.set_defaults(func=cmd_dev_up)

    keys = sub.add_parser("keys", help="API keys (operators: edits the key file the services read)")
    keys.add_argument("--keys-file", help="default TRAINYARD_API_KEYS_FILE, else <TRAINYARD_DATA_DIR>/api-keys.json")
    keys_sub = keys.add_subparsers(dest="keys", required=True)
    create = keys_sub.add_parser("create", help="a new key for a tenant (printed once; only its hash is kept)")
    create.add_argument("--tenant", required=True, help="lowercase letters, digits and '-'")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--admin", action="store_true", help="may read every tenant's usage")
    create.set_defaults(func=cmd_keys_create)
    keys_sub.add_parser("list", help="keys with tenant, name and state (never the key)").set_defaults(func=cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)

    demo = sub.add_parser("demo", help="the whole path on scikit-learn's digits: import, train, evaluate")
    demo.add_argument("--data-dir", default=".trainyard-demo", help="where the demo stack keeps its data")
    demo.add_argument("--max-minutes", type=int, default=60, help="maximum training duration (S5)")
    demo.set_defaults(func=cmd_demo)

    dataset = sub.add_parser("dataset", help="datasets, images and versions").add_subparsers(dest="dataset_cmd", required=True)
    c = dataset.add_parser("create", help="create a dataset")
    c.add_argument("name")
    c.add_argument("--description", default="")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_dataset_create)
    c = dataset.add_parser("list", help="list datasets")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_dataset_list)
    c = dataset.add_parser("import", help="import a folder or zip of <class name>/<image> files, or an ExeML manifest")
    c.add_argument("source", help="a folder, a .zip, or a .json/.jsonl manifest (sources: local paths or s3:// objects)")
    c.add_argument("--dataset", required=True, help="dataset name or id (created when missing)")
    c.set_defaults(func=cmd_dataset_import)
    c = dataset.add_parser("stats", help="labeled images per class")
    c.add_argument("dataset")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_dataset_stats)
    c = dataset.add_parser("images", help="list images, optionally of one label or unlabeled")
    c.add_argument("dataset")
    c.add_argument("--label", default="")
    c.add_argument("--unlabeled", action="store_true")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_dataset_images)
    c = dataset.add_parser("label", help="set labels: IMAGE_ID=LABEL … (an empty label removes it)")
    c.add_argument("dataset")
    c.add_argument("assignments", nargs="+")
    c.set_defaults(func=cmd_dataset_label)
    c = dataset.add_parser("rename-class", help="rename a class (merges into an existing one)")
    c.add_argument("dataset")
    c.add_argument("label")
    c.add_argument("new_label")
    c.set_defaults(func=cmd_dataset_rename_class)
    c = dataset.add_parser("diff", help="compare two versions")
    c.add_argument("dataset")
    c.add_argument("base")
    c.add_argument("target")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_dataset_diff)
    c = dataset.add_parser("export", help="write a version's manifest (JSON Lines, ExeML shape)")
    c.add_argument("dataset")
    c.add_argument("version")
    c.add_argument("-o", "--output", default="-", help="file to write (default: standard output)")
    c.set_defaults(func=cmd_dataset_export)
    c = dataset.add_parser("delete", help="delete a dataset")
    c.add_argument("dataset")
    c.set_defaults(func=cmd_dataset_delete)
    c = dataset.add_parser("check", help="can training start? (rule S1, every failing rule listed)")
    c.add_argument("dataset")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_dataset_check)
    c = dataset.add_parser("publish", help="publish a version with a seeded, stratified split")
    c.add_argument("dataset")
    c.add_argument("--name", default="", help="version name (default: proposed, v1, v2, …)")
    c.add_argument("--ratio", default=None, help="training ratio, 0 < r < 1, 1 to 5 decimals (default 0.8)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_dataset_publish)
    c = dataset.add_parser("versions", help="list published versions")
    c.add_argument("dataset")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_dataset_versions)

    t = sub.add_parser("train", help="start a training job and follow it (Ctrl-C detaches)")
    t.add_argument("--dataset", required=True, help="dataset name or id")
    t.add_argument("--version", default="", help="existing dataset version (default: publish one now, S2)")
    t.add_argument("--new-version", default="", help="name of the version published now (default: proposed)")
    t.add_argument("--ratio", default=None, help="training ratio of the new version (default 0.8, S3)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--incremental", default="", metavar="MODEL_VERSION", help="start from this model version (S4)")
    t.add_argument("--max-minutes", type=int, default=0, help="maximum training duration, 6–6000 (default 60, S5)")
    t.add_argument("--preference", choices=PREFERENCES, default="", help="default balance (S6)")
    t.add_argument("--flavor", default="", help="compute flavor id (default: the free flavor, S7)")
    t.add_argument("--accept-free-terms", action="store_true", help="agree to the free flavor's terms")
    t.add_argument("--max-epochs", type=int, default=0, help="cap the epochs (quick trials)")
    t.add_argument("--detach", action="store_true", help="print the job id and return")
    t.set_defaults(func=cmd_train)

    jobs = sub.add_parser("jobs", help="training jobs").add_subparsers(dest="jobs_cmd", required=True)
    c = jobs.add_parser("list")
    c.add_argument("--dataset", default="")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_jobs_list)
    c = jobs.add_parser("show")
    c.add_argument("job")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_jobs_show)
    c = jobs.add_parser("watch", help="re-attach to a job and follow it")
    c.add_argument("job")
    c.add_argument("--after", type=int, default=0, help="only events after this sequence")
    c.set_defaults(func=cmd_jobs_watch)
    c = jobs.add_parser("cancel")
    c.add_argument("job")
    c.set_defaults(func=cmd_jobs_cancel)

    c = sub.add_parser("flavors", help="compute flavors with price, capacity and queue")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_flavors)

    models = sub.add_parser("models", help="model versions").add_subparsers(dest="models_cmd", required=True)
    c = models.add_parser("list", help="versions side by side with their key metrics")
    c.add_argument("dataset")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_models_list)
    c = models.add_parser("show", help="evaluation, classification statistics, confusion matrix")
    c.add_argument("dataset")
    c.add_argument("version")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_models_show)
    c = models.add_parser("report", help="write an HTML report with the evaluation and plots")
    c.add_argument("dataset")
    c.add_argument("version")
    c.add_argument("-o", "--output", help="HTML file (default DATASET-VERSION.html)")
    c.set_defaults(func=cmd_models_report)
    c = models.add_parser("predict", help="predict labels of image files or folders")
    c.add_argument("dataset")
    c.add_argument("version")
    c.add_argument("images", nargs="+", help="image files or folders")
    c.add_argument("--top-k", type=int, default=3)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_models_predict)
    c = models.add_parser("export", help="download the artifacts (weights, TorchScript export, metrics, plots)")
    c.add_argument("dataset")
    c.add_argument("version")
    c.add_argument("-o", "--output", help="folder (default DATASET-VERSION)")
    c.set_defaults(func=cmd_models_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except InvalidArgument as exc:
        console.print(f"[red]invalid argument[/]: {exc.message}")
        return EXIT_ERROR
    except FailedPrecondition as exc:
        console.print(f"[red]refused[/]: {exc.message}")
        for violation in exc.violations:
            console.print(f"  • {violation}")
        return EXIT_ERROR
    except TrainyardError as exc:
        console.print(f"[red]{type(exc).__name__}[/]: {exc.message}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

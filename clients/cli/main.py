"""`trainyard`: the command-line client.

Exit codes: 0 success; 1 a request failed, or some files could not be imported
or predicted (the message says why); 2 bad usage, nothing was done; 3 the followed job
ended failed or cancelled; 4 detached from a job with Ctrl-C (it keeps running:
re-attach with `trainyard jobs watch JOB`); 130 interrupted with Ctrl-C (no
half-written output is left behind).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from trainyard.cli import display
from trainyard.cli.display import console, escape
from trainyard.errors import FailedPrecondition, InvalidArgument, NotFound, TrainyardError
from trainyard.sdk import Client
from trainyard.sdk.client import ConnectionSettingsError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_JOB_FAILED, EXIT_DETACHED = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
PREFERENCES = ("performance_first", "balance", "accuracy_first")
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
IMAGE_ID_LENGTH = 64  # hex digits of a SHA-256
SHOWN_ID_LENGTH = 12  # `dataset images` shows ids cut to this (longer when needed to tell them apart)
MIN_ID_PREFIX = 6  # `dataset label` takes an image id prefix this long or longer


class UsageError(Exception):
    """What the user typed cannot work (a missing file, a bad output path); nothing was done. Exit 2."""


def _client(args) -> Client:
    return Client(args.dataset_address, args.scheduler_address, api_key=args.api_key)


def _whole_number(low: int, high: int, what: str):
    """An argparse type: an integer within a proto field's range, else a usage error naming the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what} is {low:,} to {high:,}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def _sized(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def _not_images(count: int) -> str:
    return f"{_sized(count, 'file')} that {'is not an image' if count == 1 else 'are not images'}"


def _by_extension(paths) -> str:
    """'.txt ×2, .py ×1' for the skipped files."""
    counts = Counter(Path(p).suffix.lower() or "(no extension)" for p in paths)
    return ", ".join(f"{ext} ×{n}" for ext, n in counts.most_common())


# output files: written to a temporary name beside the target, renamed at the end -----
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _output_file(text: str) -> Path:
    """The file an output goes to, checked before any request is made."""
    path = Path(text)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give the name of the file to write")
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {path}: there is no folder {path.parent}")
    return path


@contextmanager
def _writing_file(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, renamed to it when the block ends; removed on an error or Ctrl-C."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    partial = Path(name)
    try:
        os.chmod(partial, 0o666 & ~_umask())
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _output_folder(text: str) -> Path:
    """The folder an output goes to (made when missing), checked before any request is made."""
    folder = Path(text)
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"cannot write to {folder}: {existing} is a file, not a folder")
    return folder


@contextmanager
def _writing_folder(folder: Path) -> Iterator[Path]:
    """A temporary folder; its files move into `folder` (made when missing) when the block ends.
    On an error or Ctrl-C it is removed and `folder` is left as it was.

    The temporary folder is made on the file system the files end on: inside `folder` when it
    exists (it may be a mount point, and a rename cannot cross file systems), else beside it."""
    anchor = folder if folder.is_dir() else next(p for p in folder.absolute().parents if p.is_dir())
    partial = Path(tempfile.mkdtemp(dir=anchor, prefix=f".{folder.name}.", suffix=".part"))
    try:
        os.chmod(partial, 0o777 & ~_umask())
        yield partial
        if folder.is_dir():
            for item in partial.iterdir():
                os.replace(item, folder / item.name)
            partial.rmdir()
        else:
            folder.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


# dev and demo --------------------------------------------------------------------
def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def cmd_dev_up(args) -> int:
    from trainyard.stack.local import LocalStack, StackError, StackSettings

    try:
        settings = StackSettings.from_env()
    except StackError as exc:
        raise UsageError(exc.summary) from None
    if args.data_dir:
        settings.data_dir = Path(args.data_dir)
    settings.tls = settings.tls or args.tls or args.mtls
    settings.mtls = settings.mtls or args.mtls
    stack = LocalStack(settings)
    signal.signal(signal.SIGTERM, _interrupt)  # stop cleanly on SIGTERM too, not only Ctrl-C
    try:
        with console.status("starting the S3 server and the services…"):
            stack.start()  # stops what it started when it fails or is interrupted
    except StackError as exc:
        display.say(f"[red]the local stack did not start[/]: {escape(exc.summary)}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        console.print("interrupted while starting; stopped")
        return EXIT_INTERRUPTED
    table = display.Table(title="Trainyard local stack")
    table.add_column("component")
    table.add_column("address", overflow="fold")
    table.add_row("object store (S3)", f"http://{stack.s3_config.endpoint}  bucket {stack.s3_config.bucket}")
    for name in ("dataset", "scheduler", "trainer"):
        table.add_row(f"{name} service (gRPC)", stack.address(name))
    table.add_row("your API key (tenant default)", escape(f"{stack.api_key_file}  (the CLI and SDK find it)"))
    if stack.certificates is not None:
        table.add_row("TLS" + (" with client certificates" if settings.mtls else ""), escape(f"CA {stack.certificates.ca}"))
    table.add_row("data and logs", escape(str(stack.data_dir)))
    console.print(table)
    console.print("Ready. Press Ctrl-C to stop.")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave half the stack running
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
    store = _key_store(args)
    columns = [display.Column("id", key=True), display.Column("tenant", key=True), "name", "admin",
               display.Column("created", optional=2), display.Column("revoked", optional=1)]
    rows = [[k.id, k.tenant, k.name, "yes" if k.admin else "", display.when(k.created),
             display.when(k.revoked) if k.revoked else ""] for k in store.list()]
    console.print(display.fitted_table(f"API keys in {store.path}", columns, rows))
    return EXIT_OK


def cmd_keys_revoke(args) -> int:
    record = _key_store(args).revoke(args.key_id)
    console.print(f"revoked key {record.id} of tenant {record.tenant}; services refuse it within a second")
    return EXIT_OK


def cmd_demo(args) -> int:
    from trainyard.cli.demo import run_demo
    from trainyard.stack.local import StackError

    try:
        return run_demo(Path(args.data_dir), max_minutes=args.max_minutes)
    except StackError as exc:
        display.say(f"[red]the demo's stack did not start[/]: {escape(exc.summary)}")
        return EXIT_ERROR


# datasets ------------------------------------------------------------------------
def cmd_dataset_create(args) -> int:
    ds = _client(args).create_dataset(args.name, args.description)
    if args.json:
        display.print_json(ds)
    else:
        console.print(f"created dataset {escape(ds.display_name)} ({ds.id})")
    return EXIT_OK


def cmd_dataset_list(args) -> int:
    datasets = _client(args).list_datasets()
    if args.json:
        display.print_json(datasets)
        return EXIT_OK
    columns = [display.Column("id", key=True), display.Column("name", key=True), display.Column("images", justify="right"),
               display.Column("labeled", justify="right"), display.Column("versions", justify="right")]
    rows = [[d.id, d.display_name, str(d.image_count), str(d.labeled_image_count), str(d.version_count)] for d in datasets]
    console.print(display.fitted_table("Datasets", columns, rows))
    return EXIT_OK


MANIFEST_SUFFIXES = (".json", ".jsonl", ".manifest")


def _import_plan(source: Path) -> tuple[str, int, list[str]]:
    """(kind, how many images or records, the files skipped as not images), checked before anything is created."""
    from trainyard.sdk.client import ManifestError, image_files, read_manifest, zip_image_names

    if not source.exists():
        raise UsageError(f"{source} does not exist")
    if source.is_dir():
        images, others = image_files(source)
        kind, count, skipped = "folder", len(images), [str(p) for p in others]
    elif source.suffix.lower() == ".zip":
        import zipfile

        try:
            with zipfile.ZipFile(source) as archive:
                names, skipped = zip_image_names(archive)
        except zipfile.BadZipFile as exc:
            raise UsageError(f"{source} is not a readable zip file ({exc})") from None
        kind, count = "zip", len(names)
    elif source.suffix.lower() in MANIFEST_SUFFIXES:
        try:
            records = read_manifest(source)
        except ManifestError as exc:
            raise UsageError(f"{exc.message}; nothing was imported") from None
        kind, count, skipped = "manifest", len(records), []
    else:
        raise UsageError(f"{source}: give a folder, a .zip or a manifest (.json or .jsonl)")
    if not count:
        what = "no image files" if kind != "manifest" else "no records"
        extra = ""
        if skipped:
            extra = (f"; {_not_images(len(skipped))} ({_by_extension(skipped)}); "
                     f"images end in {', '.join(sorted(_image_suffixes()))}")
        raise UsageError(f"{source}: {what}{extra}; nothing was imported")
    return kind, count, skipped


def _image_suffixes() -> set[str]:
    from trainyard.sdk.client import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def cmd_dataset_import(args) -> int:
    """Import a folder of <label>/<image>, a zip of the same layout, or an ExeML manifest (.json/.jsonl)."""
    import unicodedata

    source = Path(args.source)
    kind, count, skipped = _import_plan(source)  # before the dataset is created
    client = _client(args)
    try:
        dataset = client.get_dataset(args.dataset)
    except NotFound:
        dataset = client.create_dataset(args.dataset)
        console.print(f"created dataset {escape(dataset.display_name)} ({dataset.id})")
    # labels before the import, to tell which duplicates the files relabel (the server replaces their label)
    before = {i.id: i.label for i in client.list_images(dataset.id)} if dataset.image_count else {}
    totals = Counter()
    rejected = []

    def on_batch(summary, done, total) -> None:
        totals["stored"] += summary.stored
        totals["duplicate"] += summary.duplicates
        totals["rejected"] += summary.rejected
        for r in summary.results:
            if r.status == "rejected":
                rejected.append(r)
            elif r.status == "duplicate" and r.label and r.image_id in before:
                totals["relabeled"] += before[r.image_id] != unicodedata.normalize("NFC", r.label)
        advance(done, total)

    try:
        with display.progress_bar(f"importing {source.name}", count) as advance:
            if kind == "folder":
                client.upload_folder(dataset.id, source, on_batch=on_batch)
            elif kind == "zip":
                client.upload_zip(dataset.id, source, on_batch=on_batch)
            else:
                client.import_manifest(dataset.id, source, on_batch=on_batch)
    except KeyboardInterrupt:
        display.say(f"\ninterrupted: {_kept(client, dataset, totals['stored'])}")
        return EXIT_INTERRUPTED
    except TrainyardError as exc:  # a batch failed: main() prints the error, then this note
        exc.add_note(_kept(client, dataset, totals["stored"]))
        raise
    line = f"{totals['stored']} stored, {_sized(totals['duplicate'], 'duplicate')}, {totals['rejected']} rejected"
    if totals["relabeled"]:
        line += (f"; {_sized(totals['relabeled'], 'duplicate')} relabeled: the label from the "
                 f"{'folder name' if kind != 'manifest' else 'manifest'} replaced the one it had")
    display.say(line)
    if skipped:
        display.say(f"skipped {_not_images(len(skipped))} ({_by_extension(skipped)})")
    for r in rejected[:20]:
        display.say(f"  [red]rejected[/] {escape(r.file_name)}: {escape(r.reason)}")
    if len(rejected) > 20:
        console.print(f"  … and {len(rejected) - 20:,} more rejected")
    return EXIT_ERROR if totals["rejected"] else EXIT_OK


def _kept(client: Client, dataset, stored: int) -> str:
    """What an import that ended early left in the dataset: its image count now, asked of the server
    (the batch in flight may have been stored), else what the finished batches reported."""
    try:
        now = client.get_dataset(dataset.id, timeout=10).image_count
    except (Exception, KeyboardInterrupt):  # best effort: the service may be what failed
        return (f"{_sized(stored, 'file')} stored before, and kept (the batch being sent may have been stored too); "
                "importing again reports them as duplicates")
    added = now - dataset.image_count
    if added <= 0:
        return f"the dataset has {_sized(now, 'image')} now, as before this import"
    return (f"the dataset has {_sized(now, 'image')} now, {added:,} more than before this import: they are kept, "
            "and importing again reports them as duplicates")


def cmd_dataset_check(args) -> int:
    report = _client(args).check_trainability(args.dataset)
    if args.json:
        display.print_json(report)
        return EXIT_OK if report.trainable else EXIT_ERROR
    table = display.Table(title=escape(f"Labeled images of {args.dataset}"))
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
        console.print(f"  • {escape(violation)}")
    return EXIT_ERROR


def cmd_dataset_stats(args) -> int:
    report = _client(args).check_trainability(args.dataset)
    if args.json:
        display.print_json(report)
        return EXIT_OK
    table = display.Table(title=escape(f"Classes of {args.dataset}"))
    table.add_column("class")
    table.add_column("labeled images", justify="right")
    table.add_column("share", justify="right")
    labeled = sum(report.classes.values())
    for label, count in report.classes.items():
        table.add_row(label, str(count), f"{count / max(labeled, 1):.1%}")
    console.print(table)
    console.print(f"{labeled} labeled, {report.unlabeled_image_count} unlabeled")
    return EXIT_OK


def short_ids(ids: list[str]) -> dict[str, str]:
    """Each id cut to SHOWN_ID_LENGTH characters, or longer where that is needed to tell it from the others."""
    shown: dict[str, str] = {}
    ordered = sorted(set(ids))
    for index, image_id in enumerate(ordered):
        neighbours = ordered[max(index - 1, 0):index] + ordered[index + 1:index + 2]
        common = max((len(os.path.commonprefix([image_id, n])) for n in neighbours), default=0)
        shown[image_id] = image_id[:max(SHOWN_ID_LENGTH, common + 1)]
    return shown


def cmd_dataset_images(args) -> int:
    images = _client(args).list_images(args.dataset, args.label, args.unlabeled)
    if args.json:  # create_time as the proto JSON this printed before (…Z), not isoformat's +00:00
        console.print_json(data=[{**display.plain(i), "create_time": _rfc3339(i.create_time)} for i in images])
        return EXIT_OK
    shown = short_ids([i.id for i in images])
    columns = [display.Column("id", key=True), display.Column("file"), display.Column("label", key=True),
               display.Column("format", optional=2), display.Column("size", optional=1)]
    rows = [[shown[i.id], i.file_name, i.label or display.Text("unlabeled", style="dim"), i.format, f"{i.width}×{i.height}"]
            for i in images]
    console.print(display.fitted_table(f"Images of {args.dataset}", columns, rows,
                                       caption="ids shortened: `dataset label` takes them as shown; --json gives whole ids"
                                       if images else ""))
    return EXIT_OK


def _rfc3339(moment: datetime | None) -> str | None:
    """A UTC time as proto JSON writes a Timestamp: 2026-01-02T03:04:05Z, fractions in 3, 6 digits when there are any."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".removesuffix("000")
    return text + "Z"


def resolve_image_ids(client: Client, dataset: str, typed: list[str]) -> dict[str, str]:
    """Whole image ids for what was typed: a whole id, or a prefix of one (at least MIN_ID_PREFIX characters,
    as `dataset images` shows them). A prefix no image has is NotFound; one that fits several is a UsageError."""
    resolved = {t: t.lower() for t in typed if len(t) == IMAGE_ID_LENGTH}
    prefixes = [t for t in typed if t not in resolved]
    short = [t for t in prefixes if len(t) < MIN_ID_PREFIX]
    if short:
        raise UsageError(f"image id {short[0]!r} is too short: give at least {MIN_ID_PREFIX} characters of it "
                         "(`dataset images` shows ids)")
    if prefixes:
        ids = [i.id for i in client.list_images(dataset)]
        for prefix in prefixes:
            matches = [i for i in ids if i.startswith(prefix.lower())]
            if not matches:
                raise NotFound(f"dataset {dataset} has no image whose id starts with {prefix!r}")
            if len(matches) > 1:
                listed = ", ".join(m[:len(prefix) + 4] + "…" for m in matches[:5])
                raise UsageError(f"image id {prefix!r} fits {len(matches)} images ({listed}); give more of it")
            resolved[prefix] = matches[0]
    return resolved


def cmd_dataset_label(args) -> int:
    pairs = []
    for item in args.assignments:
        image_id, sep, label = item.partition("=")
        if not sep or not image_id:
            raise UsageError(f"{item!r}: write IMAGE_ID=LABEL (an empty label removes it)")
        pairs.append((image_id.strip(), label))
    client = _client(args)
    ids = resolve_image_ids(client, args.dataset, [image_id for image_id, _ in pairs])
    labels: dict[str, tuple[str, str]] = {}  # whole id: (as typed, label)
    for typed, label in pairs:
        first = labels.setdefault(ids[typed], (typed, label))
        if first[1] != label:
            raise UsageError(f"{first[0] + '=' + first[1]!r} and {typed + '=' + label!r} are the same image "
                             f"({ids[typed][:SHOWN_ID_LENGTH]}) with two labels; give it one; nothing was changed")
    changed = client.set_labels(args.dataset, {image_id: label for image_id, (_, label) in labels.items()})
    console.print(f"{changed} label(s) changed")
    return EXIT_OK


def cmd_dataset_rename_class(args) -> int:
    changed = _client(args).rename_class(args.dataset, args.label, args.new_label)
    console.print(escape(f"{changed} image(s) relabeled {args.label!r} → {args.new_label!r}"))
    return EXIT_OK


def cmd_dataset_diff(args) -> int:
    diff = _client(args).diff_versions(args.dataset, args.base, args.target)
    if args.json:
        console.print_json(data=_dict(diff))
        return EXIT_OK
    console.print(escape(f"{args.base} → {args.target}: {len(diff.added_image_ids)} added, {len(diff.removed_image_ids)} "
                         f"removed, {len(diff.relabeled)} relabeled"))
    columns = ["class", display.Column(args.base, justify="right"), display.Column(args.target, justify="right"),
               display.Column("change", justify="right")]
    rows = [[c.label, str(c.base_count), str(c.target_count), f"{c.target_count - c.base_count:+d}"] for c in diff.class_changes]
    console.print(display.fitted_table("Class counts", columns, rows))
    return EXIT_OK


def cmd_dataset_export(args) -> int:
    output = None if args.output == "-" else _output_file(args.output)
    data = _client(args).export_manifest(args.dataset, args.version)
    if output is None:
        sys.stdout.write(data.decode())
        return EXIT_OK
    with _writing_file(output) as partial:
        partial.write_bytes(data)
    console.print(f"wrote {len(data.splitlines())} samples to {escape(str(output))}")
    return EXIT_OK


def cmd_dataset_delete(args) -> int:
    _client(args).delete_dataset(args.dataset)
    console.print(f"deleted {escape(args.dataset)} (objects kept for the retention period; running jobs finish)")
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
    columns = [display.Column("version", key=True), "ratio", display.Column("seed", optional=1),
               display.Column("train", justify="right"), display.Column("validation", justify="right"),
               display.Column("classes", justify="right"), display.Column("parent", key=True, optional=2),
               display.Column("created", optional=3)]
    rows = [[v.name, v.train_ratio, str(v.seed), str(v.train_count), str(v.validation_count), str(len(v.classes)),
             v.parent_version, v.create_time.strftime("%Y-%m-%d %H:%M:%S") if v.create_time else ""] for v in versions]
    console.print(display.fitted_table(f"Versions of {args.dataset}", columns, rows))
    return EXIT_OK


# training ------------------------------------------------------------------------
def cmd_train(args) -> int:
    client = _client(args)
    accept = args.accept_free_terms
    flavors = {f.id: f for f in client.list_flavors()}
    flavor_id = args.flavor or next((f.id for f in flavors.values() if f.kind == "free"), "")
    flavor = flavors.get(flavor_id)
    if flavor is not None and flavor.kind == "free" and not accept:
        console.print(f"[bold]{escape(flavor.display_name)}[/] terms:\n{escape(flavor.terms)}")
        if not sys.stdin.isatty():
            raise UsageError("the free flavor needs your agreement: pass --accept-free-terms; no job was created")
        try:
            answer = console.input(escape("I have read and agree to the above [y/N]: "))
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            raise UsageError("terms not accepted; no job was created (pass --flavor to choose a paid flavor)")
    try:
        job = client.create_training_job(
            args.dataset, dataset_version=args.version, new_version_name=args.new_version, train_ratio=args.ratio,
            seed=args.seed, incremental_model_version=args.incremental, max_duration_minutes=args.max_minutes,
            preference=args.preference, flavor=flavor_id, accept_free_terms=accept, max_epochs=args.max_epochs,
        )
    except KeyboardInterrupt:  # the request may have reached the scheduler, which then created the job
        display.say(f"\ninterrupted; the job may have been created: "
                    f"{escape(f'trainyard jobs list --dataset {shlex.quote(args.dataset)}')} shows it")
        return EXIT_INTERRUPTED
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
        console.print(f"[red]job {job.state}[/]: {escape(job.error_message or display.words(job.stop_reason))}")
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
    table = display.Table(title=escape(f"Training job {job.id}"))
    table.add_column("field")
    table.add_column("value")
    rows = [("dataset", job.dataset_id), ("state", job.state), ("stop reason", display.words(job.stop_reason)),
            ("error", job.error_message), ("queue position", str(job.queue_position or "")), ("waiting because", job.wait_reason),
            ("model version", job.model_version), ("duration limit", f"{job.duration_limit.total_seconds() / 60:g} min"),
            ("billed", f"{job.billed_seconds:.0f} s, cost {job.cost:.4f}"), ("events", str(job.last_sequence))]
    rows += [(name.replace("_", " "), str(value)) for name, value in display.plain(job.parameters).items()]
    for name, value in rows:
        if value:
            table.add_row(name, escape(value))
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
    right = {"justify": "right"}
    columns = [display.Column("id", key=True), "name", "kind", display.Column("price/h", **right),
               display.Column("capacity", **right), display.Column("in use", **right), display.Column("queued", **right),
               display.Column("quota/tenant", optional=1, **right)]
    rows = [[f.id, f.display_name, display.words(f.kind), f"{f.price_per_hour:.2f}", str(f.capacity), str(f.slots_in_use),
             str(f.queue_length), str(f.tenant_concurrency_quota or "∞")] for f in flavors]
    console.print(display.fitted_table("Compute flavors", columns, rows))
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

    output = _output_file(args.output or f"{args.dataset}-{args.version}.html")  # the names typed, as `models export`
    client = _client(args)
    mv = client.get_model_version(args.dataset, args.version)
    metrics = json.loads(client.download_artifact(args.dataset, args.version, "metrics.json"))
    plots = {name: client.download_artifact(args.dataset, args.version, name) for name in ("confusion_matrix.png", "curves.png")}
    with _writing_file(output) as partial:
        partial.write_text(report.render(f"Model version {mv.version} of {args.dataset}", display.summary_rows(mv), metrics, plots))
    console.print(f"wrote {escape(str(output))}")
    return EXIT_OK


PREDICT_BATCH = 64  # images per Predict call (the server's limit)
# bytes of images per Predict call: the gRPC message cap (trainyard.rpc.MAX_MESSAGE_BYTES, 16 MiB) less
# room for the request's other fields; a file larger than this alone cannot be sent
PREDICT_BATCH_BYTES = 15 * 2**20


def _image_index(exc: InvalidArgument, count: int) -> tuple[int, str] | None:
    """(index, reason) when the server refused one image of the request (field images[i])."""
    import re

    for v in exc.violations:
        match = re.fullmatch(r"images\[(\d+)\]", v.field)
        if match and int(match.group(1)) < count:
            return int(match.group(1)), v.description
    return None


def _predict_batches(paths: list[Path], outcomes: dict) -> Iterator[tuple[int, list[tuple[Path, bytes]]]]:
    """(files done, [(path, bytes)]) batches of at most PREDICT_BATCH files and PREDICT_BATCH_BYTES bytes,
    read one batch at a time; a file that cannot be read or sent gets its reason in `outcomes` instead."""
    batch: list[tuple[Path, bytes]] = []
    size = 0
    for done, path in enumerate(paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            outcomes[path] = "no such file" if isinstance(exc, FileNotFoundError) else f"cannot read the file: {exc.strerror or exc}"
            continue
        if len(data) > PREDICT_BATCH_BYTES:
            outcomes[path] = f"too large to send: {len(data):,} bytes; at most {PREDICT_BATCH_BYTES:,}"
            continue
        if batch and (len(batch) == PREDICT_BATCH or size + len(data) > PREDICT_BATCH_BYTES):
            yield done, batch
            batch, size = [], 0
        batch.append((path, data))
        size += len(data)
    yield len(paths), batch


def predict_files(client: Client, dataset: str, version: str, paths: list[Path], top_k: int,
                  on_batch=lambda done: None) -> dict[Path, list[tuple[str, float]] | str]:
    """Each file's top labels, or why it could not be predicted (unreadable, too large, or refused by the server).

    Files go in batches that fit one request (PREDICT_BATCH files, PREDICT_BATCH_BYTES bytes). A file
    the server refuses is taken out of its batch and the rest sent again, so one bad file costs the
    others nothing."""
    outcomes: dict[Path, list[tuple[str, float]] | str] = {}
    for done, pending in _predict_batches(paths, outcomes):
        while pending:
            try:
                predictions = client.predict(dataset, version, [data for _, data in pending], top_k)
            except InvalidArgument as exc:
                refused = _image_index(exc, len(pending))
                if refused is None:
                    raise
                index, reason = refused
                outcomes[pending.pop(index)[0]] = reason
                continue
            outcomes.update((path, prediction) for (path, _), prediction in zip(pending, predictions, strict=True))
            break
        on_batch(done)
    return {path: outcomes[path] for path in paths}


def cmd_models_predict(args) -> int:
    from trainyard.sdk.client import image_files

    paths: list[Path] = []
    missing = []
    for item in map(Path, args.images):
        if item.is_dir():
            images, _ = image_files(item)
            if not images:
                raise UsageError(f"{item}: no image files in this folder (images end in {', '.join(sorted(_image_suffixes()))})")
            paths += images
        elif item.exists():
            paths.append(item)
        else:
            missing.append(str(item))
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    client = _client(args)
    with display.progress_bar("predicting", len(paths)) as advance:
        outcomes = predict_files(client, args.dataset, args.version, paths, args.top_k, on_batch=advance)
    failed = {path: reason for path, reason in outcomes.items() if isinstance(reason, str)}
    if args.json:
        console.print_json(data=[{"file": str(p), "error": outcome} if isinstance(outcome, str) else
                                 {"file": str(p), "labels": [{"label": label, "score": score} for label, score in outcome]}
                                 for p, outcome in outcomes.items()])
        return EXIT_ERROR if failed else EXIT_OK
    rows = [[str(path), "  ".join(f"{label} ({score:.3f})" for label, score in outcome)]
            for path, outcome in outcomes.items() if not isinstance(outcome, str)]
    if rows:
        console.print(display.fitted_table(f"Predictions of {args.dataset} {args.version}",
                                           ["file", "top labels (score)"], rows))
    if failed:
        console.print(f"[red]{_sized(len(failed), 'file')} could not be predicted[/]:")
        for path, reason in failed.items():
            display.say(f"  {escape(str(path))}: {escape(reason)}")
        return EXIT_ERROR
    return EXIT_OK


def cmd_models_export(args) -> int:
    from trainyard.artifacts import ARTIFACTS

    folder = _output_folder(args.output or f"{args.dataset}-{args.version}")
    client = _client(args)
    with _writing_folder(folder) as partial:
        for name in ARTIFACTS:
            (partial / name).write_bytes(client.download_artifact(args.dataset, args.version, name))
    console.print(f"wrote {len(ARTIFACTS)} artifacts to {escape(str(folder))}/ (model.torchscript.pt runs with plain torch.jit.load)")
    return EXIT_OK


def _dict(message) -> dict:
    """A message as JSON-ready data, 64-bit integers as numbers like the other --json outputs (proto JSON makes them strings)."""
    from google.protobuf import json_format
    from google.protobuf.descriptor import FieldDescriptor

    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    wide = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}

    def fix(value, descriptor):
        for field in descriptor.fields:
            if field.name not in value:
                continue
            if field.type in wide:
                value[field.name] = [int(v) for v in value[field.name]] if isinstance(value[field.name], list) else int(value[field.name])
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                items = value[field.name] if isinstance(value[field.name], list) else [value[field.name]]
                for item in items:
                    if isinstance(item, dict):
                        fix(item, field.message_type)
        return value

    return fix(data, message.DESCRIPTOR)


# proto field ranges: a number outside them is a usage error here, not a traceback in the SDK
SEED = _whole_number(-(INT64_MAX + 1), INT64_MAX, "a seed")
MINUTES = _whole_number(0, INT32_MAX, "--max-minutes")
EPOCHS = _whole_number(0, INT32_MAX, "--max-epochs")
SEQUENCE = _whole_number(0, INT64_MAX, "a sequence number")
TOP_K = _whole_number(1, INT32_MAX, "--top-k")


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
    demo.add_argument("--max-minutes", type=MINUTES, default=60, help="maximum training duration (S5)")
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
    c = dataset.add_parser("images", help="list images, optionally of one label or unlabeled (ids shortened; --json: whole)")
    c.add_argument("dataset")
    c.add_argument("--label", default="")
    c.add_argument("--unlabeled", action="store_true")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_dataset_images)
    c = dataset.add_parser("label", help="set labels: IMAGE_ID=LABEL … (an empty label removes it; an id as "
                                         "`dataset images` shows it, or any unique prefix of 6 or more characters)")
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
    c.add_argument("--seed", type=SEED, default=0, help="seed of the random split (S3)")
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
    t.add_argument("--seed", type=SEED, default=0, help="seed of the new version's random split (S3)")
    t.add_argument("--incremental", default="", metavar="MODEL_VERSION", help="start from this model version (S4)")
    t.add_argument("--max-minutes", type=MINUTES, default=0, help="maximum training duration, 6–6000 (default 60, S5)")
    t.add_argument("--preference", choices=PREFERENCES, default="", help="default balance (S6)")
    t.add_argument("--flavor", default="", help="compute flavor id (default: the free flavor, S7)")
    t.add_argument("--accept-free-terms", action="store_true", help="agree to the free flavor's terms")
    t.add_argument("--max-epochs", type=EPOCHS, default=0, help="cap the epochs (quick trials)")
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
    c.add_argument("--after", type=SEQUENCE, default=0, help="only events after this sequence")
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
    c.add_argument("--top-k", type=TOP_K, default=3, help="labels per image (at most the number of classes)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_models_predict)
    c = models.add_parser("export", help="download the artifacts (weights, TorchScript export, metrics, plots)")
    c.add_argument("dataset")
    c.add_argument("version")
    c.add_argument("-o", "--output", help="folder (default DATASET-VERSION; files in it are replaced)")
    c.set_defaults(func=cmd_models_export)
    return p


def _refusal(exc: FailedPrecondition) -> str:
    """The refusal's message without the violations it repeats (they are listed one a line)."""
    message = exc.message
    if exc.violations and all(v in message for v in exc.violations):
        message = message[:message.find(exc.violations[0])].rstrip(" :;,")
    return message


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


def _say_notes(exc: BaseException) -> None:
    """What a command added to an error (`add_note`): what it had done before it failed."""
    for note in getattr(exc, "__notes__", ()):
        display.say(escape(note))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        display.say(f"[red]{escape(str(exc))}[/]")
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("\ninterrupted")
        return EXIT_INTERRUPTED
    except InvalidArgument as exc:
        display.say(f"[red]invalid argument[/]: {escape(exc.message)}")
        _say_notes(exc)
        return EXIT_ERROR
    except FailedPrecondition as exc:
        head = _refusal(exc)
        display.say(f"[red]refused[/]{': ' + escape(head) if head else ''}{':' if exc.violations else ''}")
        for violation in exc.violations:
            console.print(f"  • {escape(violation)}")
        _say_notes(exc)
        return EXIT_ERROR
    except TrainyardError as exc:
        display.say(f"[red]{type(exc).__name__}[/]: {escape(exc.message)}")
        _say_notes(exc)
        return EXIT_ERROR
    except ConnectionSettingsError as exc:
        display.say(f"[red]error[/]: {escape(str(exc))}")
        return EXIT_ERROR
    except OSError as exc:  # a local file: unreadable, no space left, …
        display.say(f"[red]error[/]: {escape(_os_error(exc))}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""Quickstart: a folder of labeled images in, an evaluated model version out.

    python -m trainyard.sdk.examples.quickstart FOLDER [--dataset NAME]

FOLDER holds <class name>/<image> files. The services are found through
TRAINYARD_DATASET_ADDRESS / TRAINYARD_SCHEDULER_ADDRESS or a running
`trainyard dev up`.
"""

from __future__ import annotations

import argparse

from trainyard.errors import FailedPrecondition
from trainyard.sdk import Client


def main() -> None:
    parser = argparse.ArgumentParser(description="Train a classifier on a folder of labeled images.")
    parser.add_argument("folder")
    parser.add_argument("--dataset", default="quickstart")
    parser.add_argument("--max-epochs", type=int, default=0, help="cap the epochs for a quick trial (0: the preset's)")
    args = parser.parse_args()

    client = Client()
    dataset = client.create_dataset(args.dataset)
    uploaded = client.upload_folder(dataset.id, args.folder)
    print(f"uploaded {sum(s.stored for s in uploaded)} images")

    report = client.check_trainability(dataset.id)  # rule S1: every failing rule at once
    if not report.trainable:
        raise SystemExit("cannot train yet:\n  " + "\n  ".join(report.violations))

    try:
        job = client.create_training_job(dataset.id, accept_free_terms=True, max_epochs=args.max_epochs)
    except FailedPrecondition as exc:
        raise SystemExit(f"refused: {exc.message}") from None
    for event in client.watch(job.id):  # resumes by itself if the connection drops
        if event.kind == "progress" and event.progress:
            p = event.progress
            print(f"epoch {p.epoch}/{p.epochs_total} step {p.step}/{p.steps_total} loss {p.loss:.3f}")
        elif event.kind == "state_change":
            print(f"{event.state} {event.message}")

    job = client.get_job(job.id)
    if job.state != "completed":
        raise SystemExit(f"job {job.state}: {job.error_message}")
    model = client.get_model_version(dataset.id, job.model_version)
    ev = model.evaluation
    print(f"model version {model.version}: accuracy {ev.accuracy:.4f}, "
          f"macro precision {ev.macro.precision:.4f}, macro recall {ev.macro.recall:.4f}, macro F1 {ev.macro.f1:.4f}")


if __name__ == "__main__":
    main()

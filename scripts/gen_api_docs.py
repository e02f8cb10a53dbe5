"""Render the API reference (docs/api.md) from the proto comments.

Usage: python scripts/gen_api_docs.py [--check]

--check exits 1 when docs/api.md differs from what the protos give (the tests
run it), so the reference never drifts from the API.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUTPUT = ROOT / "docs" / "api.md"

# SourceCodeInfo paths: FileDescriptorProto field numbers.
MESSAGE, ENUM, SERVICE = 4, 5, 6
FIELD, NESTED, ENUM_VALUE, METHOD = 2, 3, 2, 2


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.binpb"
        include = resources.files("grpc_tools") / "_proto"
        args = ["protoc", f"-I{PROTOS}", f"-I{include}", "--include_source_info", f"--descriptor_set_out={out}", *files]
        if protoc.main(args) != 0:
            sys.exit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): " ".join(line.strip() for line in loc.leading_comments.strip().splitlines())
        for loc in file.source_code_info.location
        if loc.leading_comments
    }


def short(type_name: str) -> str:
    return type_name.lstrip(".").replace("google.protobuf.", "")


def field_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type_name:
        name = short(field.type_name)
    else:
        name = descriptor_pb2.FieldDescriptorProto.Type.Name(field.type).removeprefix("TYPE_").lower()
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {name}"
    return f"optional {name}" if field.proto3_optional else name


def render(files: descriptor_pb2.FileDescriptorSet) -> str:
    ours = [f for f in files.file if f.package.startswith("trainyard.")]
    lines = ["# API reference", "", "Generated from `protos/` by `scripts/gen_api_docs.py`; do not edit.", ""]
    for package in sorted({f.package for f in ours}):
        lines += [f"## `{package}`", ""]
        for file in (f for f in ours if f.package == package):
            notes = comments(file)
            for si, service in enumerate(file.service):
                lines += [f"### service `{service.name}`", "", notes.get((SERVICE, si), ""), ""]
                lines += ["| RPC | request → response | what it does, and its errors |", "|---|---|---|"]
                for mi, method in enumerate(service.method):
                    request = ("stream " if method.client_streaming else "") + short(method.input_type)
                    response = ("stream " if method.server_streaming else "") + short(method.output_type)
                    lines.append(f"| `{method.name}` | `{request}` → `{response}` | {notes.get((SERVICE, si, METHOD, mi), '')} |")
                lines.append("")
            for ei, enum in enumerate(file.enum_type):
                lines += [f"### enum `{enum.name}`", "", notes.get((ENUM, ei), ""), "", "| value | number | meaning |", "|---|---|---|"]
                for vi, value in enumerate(enum.value):
                    lines.append(f"| `{value.name}` | {value.number} | {notes.get((ENUM, ei, ENUM_VALUE, vi), '')} |")
                lines.append("")
            for mi, message in enumerate(file.message_type):
                lines += [f"### message `{message.name}`", "", notes.get((MESSAGE, mi), ""), ""]
                if message.field:
                    lines += ["| field | type | meaning |", "|---|---|---|"]
                    for fi, field in enumerate(message.field):
                        lines.append(f"| `{field.name}` | `{field_type(field)}` | {notes.get((MESSAGE, mi, FIELD, fi), '')} |")
                    lines.append("")
    return "\n".join(lines).replace("\n\n\n", "\n\n").rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is not current")
    text = render(descriptor_set())
    if parser.parse_args().check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            sys.exit("docs/api.md is out of date: run python scripts/gen_api_docs.py")
        return
    OUTPUT.write_text(text)


if __name__ == "__main__":
    main()

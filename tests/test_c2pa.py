"""The C2PA reader (gcage_fast.evidence.c2pa_manifest) on files signed here with a throwaway ES256 chain."""

from __future__ import annotations

import io
import json
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("c2pa")
pytest.importorskip("cryptography")

import c2pa  # noqa: E402

from c2pa_signing import make_chain, make_image, manifest_definition, sign_image  # noqa: E402
from gcage_fast.errors import ConfigError  # noqa: E402
from gcage_fast.evidence.c2pa_manifest import (  # noqa: E402
    DEFAULT_TRUST_ANCHORS, MIME_TYPES, check_trust_anchors, has_c2pa_marker, read_c2pa)
from gcage_fast.evidence.types import C2paInfo, Evidence  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_PEM = Path(__file__).resolve().parents[2] / "shared" / "data" / "c2pa" / "C2PA-TRUST-LIST.pem"
FORMATS = ("JPEG", "PNG", "WEBP")
ALL_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF")
SIGNER = "TestGen Signer"
DETAIL_AI = "c2pa.created digitalSourceType=trainedAlgorithmicMedia, signed by TestGen Signer"


@pytest.fixture(scope="module")
def chain():
    return make_chain()


@pytest.fixture(scope="module")
def anchors(chain, tmp_path_factory):
    """The test root CA as a PEM trust-anchor file."""
    return str(chain.write_root(tmp_path_factory.mktemp("anchors") / "test-root.pem"))


@pytest.fixture(scope="module")
def signed(chain):
    """fmt -> a seeded image of that format with an AI (trainedAlgorithmicMedia) c2pa.created claim."""
    return {fmt: sign_image(make_image(fmt, seed=i), fmt, chain) for i, fmt in enumerate(ALL_FORMATS)}


def _ai_info(state: str, failures: list[str]) -> C2paInfo:
    return C2paInfo(present=True, state=state, failure_codes=failures, signer=SIGNER, issuer="TestGen Labs",
                    claim_generator="TestGen/1.0", digital_source_types=["trainedAlgorithmicMedia"],
                    actions=["c2pa.created"], ingredients=0, signing_time=None)


# ------------------------------------------------------------------------------------------- 1, 2: trust


@pytest.mark.parametrize("fmt", FORMATS)
def test_ai_claim_trusted_with_test_anchors(signed, anchors, fmt):
    info, evidence, flags = read_c2pa(signed[fmt], fmt, anchors)
    # signing_time is None: the test signer uses no time-stamp authority (that would need the network)
    assert info == _ai_info("trusted", [])
    assert evidence == [Evidence("c2pa", "ai_generated", "TestGen/1.0", DETAIL_AI, "signed")]
    assert flags == []


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("which", ["default", "none"])
def test_ai_claim_valid_but_untrusted(signed, fmt, which):
    info, evidence, flags = read_c2pa(signed[fmt], fmt, DEFAULT_TRUST_ANCHORS if which == "default" else None)
    assert info == _ai_info("valid", ["signingCredential.untrusted"])
    assert evidence == [Evidence("c2pa", "ai_generated", "TestGen/1.0", DETAIL_AI, "declared")]
    assert flags == ["c2pa.untrusted"]


def test_default_anchors_are_the_shared_list_unchanged():
    assert Path(DEFAULT_TRUST_ANCHORS).is_file()
    assert Path(DEFAULT_TRUST_ANCHORS).read_text().count("-----BEGIN CERTIFICATE-----") == 30
    if SHARED_PEM.is_file():
        assert Path(DEFAULT_TRUST_ANCHORS).read_bytes() == SHARED_PEM.read_bytes()
    check_trust_anchors(DEFAULT_TRUST_ANCHORS)


def test_chain_without_intermediate_and_gif_tiff(anchors, signed):
    direct = make_chain(intermediate=False)
    info, evidence, _ = read_c2pa(sign_image(make_image("JPEG", 7), "JPEG", direct), "JPEG", anchors)
    assert (info.state, [e.strength for e in evidence]) == ("trusted", ["signed"])
    for fmt in ("GIF", "TIFF"):
        assert read_c2pa(signed[fmt], fmt, anchors)[0] == _ai_info("trusted", [])


def test_zip_member(signed, anchors):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("dir/ai.jpg", signed["JPEG"], compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("plain.png", make_image("PNG", 3), compress_type=zipfile.ZIP_STORED)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        member, plain = zf.read("dir/ai.jpg"), zf.read("plain.png")
    info, evidence, flags = read_c2pa(member, "JPEG", anchors)
    assert (info.state, evidence[0].claim, evidence[0].strength, flags) == ("trusted", "ai_generated", "signed", [])
    assert read_c2pa(plain, "PNG", anchors) == (None, [], [])


# ------------------------------------------------------------------------------------------- 3: tampering


def _png_chunk(data: bytes, kind: bytes) -> tuple[int, int]:
    """(start, length) of the payload of the first ``kind`` chunk of a PNG."""
    pos = 8
    while pos < len(data):
        length, = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == kind:
            return pos + 8, length
        pos += 12 + length
    raise AssertionError(kind)


def _riff_chunk(data: bytes, kind: bytes) -> tuple[int, int]:
    """(start, length) of the payload of the first ``kind`` chunk of a RIFF (WebP) file."""
    pos = 12
    while pos < len(data):
        length, = struct.unpack("<I", data[pos + 4:pos + 8])
        if data[pos:pos + 4] == kind:
            return pos + 8, length
        pos += 8 + length + (length & 1)
    raise AssertionError(kind)


@pytest.mark.parametrize("fmt", FORMATS)
def test_pixels_changed_after_signing_is_invalid(signed, anchors, fmt):
    data = bytearray(signed[fmt])
    if fmt == "PNG":
        start, length = _png_chunk(bytes(data), b"IDAT")
    elif fmt == "WEBP":
        start, length = _riff_chunk(bytes(data), b"VP8 ")
    else:  # JPEG: the entropy-coded scan ends the file
        start, length = len(data) - 200, 150
    data[start + length // 2] ^= 0x5A
    info, evidence, flags = read_c2pa(bytes(data), fmt, anchors)
    assert info == _ai_info("invalid", ["assertion.dataHash.mismatch"])
    assert evidence == []
    assert flags == ["c2pa.invalid"]


# ------------------------------------------------------------------------------------------- 4, 5: claims


def test_capture_claim(chain, anchors):
    data = sign_image(make_image("PNG", 11), "PNG", chain, manifest_definition("digitalCapture",
                                                                                generator=("CamApp", "2.3")))
    info, evidence, flags = read_c2pa(data, "PNG", anchors)
    assert info.digital_source_types == ["digitalCapture"] and info.claim_generator == "CamApp/2.3"
    assert evidence == [Evidence("c2pa", "capture", "CamApp/2.3",
                                 "c2pa.created digitalSourceType=digitalCapture, signed by TestGen Signer", "signed")]
    assert flags == []


def test_composite_claim_with_parent_ingredient(chain, anchors):
    definition = manifest_definition("compositeWithTrainedAlgorithmicMedia", action="c2pa.edited")
    definition["assertions"][0]["data"]["actions"].insert(
        0, {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent-1"]}})
    parent = ({"title": "parent.jpg", "relationship": "parentOf", "label": "parent-1"}, make_image("JPEG", 12), "JPEG")
    data = sign_image(make_image("JPEG", 13), "JPEG", chain, definition, ingredients=[parent])
    info, evidence, flags = read_c2pa(data, "JPEG", anchors)
    assert info == C2paInfo(present=True, state="trusted", failure_codes=[], signer=SIGNER, issuer="TestGen Labs",
                            claim_generator="TestGen/1.0",
                            digital_source_types=["compositeWithTrainedAlgorithmicMedia"],
                            actions=["c2pa.opened", "c2pa.edited"], ingredients=1, signing_time=None)
    assert evidence == [Evidence("c2pa", "ai_edited", "TestGen/1.0", "c2pa.edited digitalSourceType="
                                 "compositeWithTrainedAlgorithmicMedia, signed by TestGen Signer", "signed")]
    assert flags == []


def test_ai_claim_of_a_parent_ingredient_is_inherited(chain, anchors, signed):
    """ChatGPT's own manifest has no actions: DALL·E's claim sits in the parentOf ingredient's manifest."""
    definition = manifest_definition(None, action="c2pa.opened")
    definition["assertions"][0]["data"]["actions"][0]["parameters"] = {"ingredientIds": ["parent-1"]}
    parent = ({"title": "parent.jpg", "relationship": "parentOf", "label": "parent-1"}, signed["JPEG"], "JPEG")
    data = sign_image(make_image("JPEG", 16), "JPEG", chain, definition, ingredients=[parent])
    info, evidence, flags = read_c2pa(data, "JPEG", anchors)
    assert info.state == "trusted" and info.ingredients == 1
    assert info.digital_source_types == ["trainedAlgorithmicMedia"]
    assert info.actions == ["c2pa.opened", "c2pa.created"]
    assert evidence == [Evidence("c2pa", "ai_generated", "TestGen/1.0", "parent ingredient: c2pa.created "
                                 "digitalSourceType=trainedAlgorithmicMedia, signed by TestGen Signer", "signed")]
    assert flags == []
    # a componentOf ingredient is not this image's history: its claim is not inherited
    component = ({"title": "part.jpg", "relationship": "componentOf", "label": "part-1"}, signed["JPEG"], "JPEG")
    definition = manifest_definition("digitalCapture")
    data = sign_image(make_image("JPEG", 17), "JPEG", chain, definition, ingredients=[component])
    assert [e.claim for e in read_c2pa(data, "JPEG", anchors)[1]] == ["capture"]


BROAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "broad"


@pytest.mark.skipif(not (BROAD / "ai" / "dall-e-3").is_dir(), reason="../shared/data/broad is absent")
def test_published_dalle3_files_carry_their_parent_claim():
    """The broad set's DALL·E 3 files (ChatGPT manifests over DALL·E parents, signed in 2024 by a certificate the
    2026 trust list no longer holds): each one a declared AI claim, never trusted, never invalid."""
    from gcage_fast.ingest.decode import sniff_format

    outcomes = set()
    files = sorted((BROAD / "ai" / "dall-e-3").iterdir())
    for f in files:
        data = f.read_bytes()
        info, evidence, flags = read_c2pa(data, sniff_format(data))
        outcomes.add((info.state, tuple((e.claim, e.strength) for e in evidence), tuple(flags)))
    assert len(files) == 25
    assert outcomes == {("valid", (("ai_generated", "declared"),), ("c2pa.untrusted",))}


def test_watermark_action_is_noted_in_detail(chain, anchors):
    definition = manifest_definition()
    definition["assertions"][0]["data"]["actions"].append(
        {"action": "c2pa.edited", "description": "Applied imperceptible SynthID watermark",
         "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"})
    info, evidence, _ = read_c2pa(sign_image(make_image("JPEG", 14), "JPEG", chain, definition), "JPEG", anchors)
    assert info.actions == ["c2pa.created", "c2pa.edited"]
    assert [e.detail for e in evidence] == [DETAIL_AI + "; Applied imperceptible SynthID watermark"]


def test_hostile_strings_are_printable_and_bounded(chain, anchors):
    definition = manifest_definition(generator=("Evil\x1b[2J\nGen" + "x" * 500, "1\r\n"))
    info, evidence, _ = read_c2pa(sign_image(make_image("PNG", 15), "PNG", chain, definition), "PNG", anchors)
    assert info.claim_generator.startswith("Evil\\x1b[2J\\nGen") and len(info.claim_generator) <= 200
    assert all(e.generator.isprintable() and len(e.generator) <= 80 and len(e.detail) <= 200 for e in evidence)


# ------------------------------------------------------------------------------------------- 6: pre-check


def _sdk_finds_manifest(data: bytes, fmt: str) -> bool:
    with c2pa.Context.from_dict({"version": 1, "verify": {"remote_manifest_fetch": False}}) as ctx:
        reader = c2pa.Reader.try_create(MIME_TYPES[fmt], io.BytesIO(data), context=ctx)
        if reader is None:
            return False
        reader.close()
        return True


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_precheck_agrees_with_sdk(signed, fmt):
    plain = make_image(fmt, seed=21)
    assert has_c2pa_marker(signed[fmt], fmt) and _sdk_finds_manifest(signed[fmt], fmt)
    assert not has_c2pa_marker(plain, fmt) and not _sdk_finds_manifest(plain, fmt)
    assert read_c2pa(plain, fmt, DEFAULT_TRUST_ANCHORS) == (None, [], [])


def test_precheck_never_misses_a_store_outside_the_usual_place(signed):
    jpeg = signed["JPEG"]
    start, end = _app11_span(jpeg)
    moved = jpeg[:start] + jpeg[end:-2] + jpeg[start:end] + jpeg[-2:]  # APP11 after the scan, before EOI
    assert has_c2pa_marker(moved, "JPEG") and has_c2pa_marker(jpeg + jpeg[start:end], "JPEG")
    png = make_image("PNG", 23)
    assert has_c2pa_marker(png + b"\x00\x00\x00\x04caBXjunkCRC!", "PNG")  # after IEND
    broken = png[:8] + b"\xff\xff\xff\xff" + png[12:] + b"caBX"  # a chunk length that overruns the file
    assert has_c2pa_marker(broken, "PNG")
    webp = make_image("WEBP", 24)
    assert has_c2pa_marker(webp + b"C2PA\x04\x00\x00\x00junk", "WEBP")
    assert not has_c2pa_marker(jpeg[:start] + jpeg[end:], "JPEG")


def test_unreadable_formats_give_nothing(signed):
    assert read_c2pa(make_image("BMP"), "BMP") == (None, [], [])
    assert read_c2pa(signed["JPEG"], None) == (None, [], [])
    assert read_c2pa(b"", "JPEG") == (None, [], [])


@pytest.mark.parametrize("fmt", FORMATS)
def test_remote_manifest_is_flagged_not_fetched(chain, fmt):
    data = sign_image(make_image(fmt, 22), fmt, chain, remote_url="http://192.0.2.1:9/manifest.c2pa")
    assert not has_c2pa_marker(data, fmt)
    assert read_c2pa(data, fmt, None) == (None, [], ["c2pa.remote_manifest"])


# ------------------------------------------------------------------------------------------- 7: malformed


def _app11(payload: bytes) -> bytes:
    return b"\xff\xeb" + struct.pack(">H", len(payload) + 2) + payload


def _garbage_jumbf() -> bytes:
    """A JPEG APP11 JUMBF payload: a c2pa-labelled superbox whose content is junk."""
    jumd = b"jumd" + bytes.fromhex("6332706100110010800000aa00389b71") + b"\x03c2pa\x00"
    desc = struct.pack(">I", 4 + len(jumd)) + jumd
    junk = b"\x00\x00\x00\x14junk" + bytes(range(12))
    box = struct.pack(">I", 8 + len(desc) + len(junk)) + b"jumb" + desc + junk
    return b"JP\x00\x01\x00\x00\x00\x01" + box


def _app11_span(data: bytes) -> tuple[int, int]:
    start = data.index(b"\xff\xeb")
    length, = struct.unpack(">H", data[start + 2:start + 4])
    return start, start + 2 + length


def test_garbage_jumbf_is_malformed():
    plain = make_image("JPEG", 31)
    info, evidence, flags = read_c2pa(plain[:2] + _app11(_garbage_jumbf()) + plain[2:], "JPEG", None)
    assert (info.present, info.state, info.failure_codes, evidence, flags) == (
        True, "invalid", ["sdk.Other"], [], ["c2pa.malformed"])


@pytest.mark.parametrize("how, flag, codes", [
    ("file_cut", "c2pa.malformed", ["sdk.Other"]),  # the file ends in the middle of the manifest store
    ("store_shortened", "c2pa.malformed", ["sdk.Verify"]),  # a well-formed JPEG whose APP11 holds half the store
    ("garbage_segment_before", "c2pa.malformed", ["sdk.Manifest"]),  # a junk JUMBF segment before the store
    ("junk_segment_before", "c2pa.invalid", ["signingCredential.untrusted", "assertion.dataHash.mismatch"]),
])
def test_truncated_manifest_never_raises(signed, how, flag, codes):
    data = signed["JPEG"]
    start, end = _app11_span(data)
    if how == "file_cut":
        bad = data[:(start + end) // 2]
    elif how == "store_shortened":
        bad = data[:start] + _app11(data[start + 4:(start + end) // 2]) + data[end:]
    elif how == "garbage_segment_before":
        bad = data[:2] + _app11(_garbage_jumbf()) + data[2:]
    else:  # a non-JUMBF APP11 segment is skipped, but it shifts the bytes the data hash covers
        bad = data[:2] + _app11(b"x" * 20) + data[2:]
    info, evidence, flags = read_c2pa(bad, "JPEG", None)
    assert (info.present, info.state, info.failure_codes, evidence, flags) == (True, "invalid", codes, [], [flag])


def test_random_mutations_never_raise(signed):
    import numpy as np

    rng = np.random.default_rng(5)
    for fmt in FORMATS:
        data = signed[fmt]
        for _ in range(30):
            bad = bytearray(data)
            for pos in rng.integers(0, len(bad), size=int(rng.integers(1, 8))):
                bad[pos] = int(rng.integers(0, 256))
            info, evidence, flags = read_c2pa(bytes(bad[: int(rng.integers(len(bad) // 2, len(bad) + 1))]), fmt)
            assert info is None or info.state in ("trusted", "valid", "invalid")
            assert all(isinstance(f, str) for f in flags) and all(isinstance(e, Evidence) for e in evidence)


# ------------------------------------------------------------------------------------------- 8: no network

_NO_NETWORK_SCRIPT = textwrap.dedent("""
    import ctypes, json, sys

    def refuse(event, args):
        if event.startswith("socket."):
            raise RuntimeError(f"network use refused: {event}")
    sys.addaudithook(refuse)  # Python-level: socket.__new__, socket.connect, socket.getaddrinfo, ...

    # OS-level: any socket(2)/connect(2) by anyone in this process (Python, Rust, libc) kills it with SIGSYS
    lib = ctypes.CDLL(sys.argv[1])
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
    for name in (b"socket", b"socketpair", b"connect"):
        assert lib.seccomp_rule_add(ctx, 0x80000000, lib.seccomp_syscall_resolve_name(name), 0) == 0  # KILL_PROCESS
    assert lib.seccomp_load(ctx) == 0

    if sys.argv[2] == "control":
        import socket
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # audit hook raises before the syscall
    if sys.argv[2] == "control-raw":
        ctypes.CDLL(None).socket(2, 1, 0)  # straight to libc: the kernel kills the process
    from gcage_fast.evidence.c2pa_manifest import read_c2pa
    out = []
    for path, fmt in json.loads(sys.argv[3]):
        for anchors in (sys.argv[4], sys.argv[5], None):
            info, evidence, flags = read_c2pa(open(path, "rb").read(), fmt, anchors)
            out.append([info and info.state, [e.strength for e in evidence], flags])
    print(json.dumps(out))
""")


def _libseccomp() -> str:
    import ctypes.util

    name = ctypes.util.find_library("seccomp")
    if name is None:
        pytest.skip("libseccomp is not installed: cannot forbid socket(2) at the OS level")
    return name


def _run_no_network(mode: str, files, anchors: str):
    cmd = [sys.executable, "-c", _NO_NETWORK_SCRIPT, _libseccomp(), mode, json.dumps(files), anchors,
           DEFAULT_TRUST_ANCHORS]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_no_socket_is_opened(chain, anchors, tmp_path):
    ocsp_chain = make_chain(seed="ocsp", ocsp_url="http://192.0.2.1:9/ocsp")  # TEST-NET-1: never routable
    files = {"ai.jpg": ("JPEG", sign_image(make_image("JPEG", 41), "JPEG", chain)),
             "ai.png": ("PNG", sign_image(make_image("PNG", 42), "PNG", chain)),
             "ai.webp": ("WEBP", sign_image(make_image("WEBP", 43), "WEBP", chain)),
             "ocsp.jpg": ("JPEG", sign_image(make_image("JPEG", 44), "JPEG", ocsp_chain)),
             "remote.jpg": ("JPEG", sign_image(make_image("JPEG", 45), "JPEG", chain,
                                                remote_url="http://192.0.2.1:9/manifest.c2pa"))}
    listed = []
    for name, (fmt, data) in files.items():
        (tmp_path / name).write_bytes(data)
        listed.append([str(tmp_path / name), fmt])
    ocsp_root = str(ocsp_chain.write_root(tmp_path / "ocsp-root.pem"))
    both = tmp_path / "both.pem"
    both.write_text(Path(anchors).read_text() + Path(ocsp_root).read_text())

    # the guards are real: Python's socket module is refused, a raw libc socket(2) kills the process
    control = _run_no_network("control", listed, str(both))
    assert control.returncode != 0 and "network use refused: socket.__new__" in control.stderr
    assert _run_no_network("control-raw", listed, str(both)).returncode == -signal.SIGSYS

    proc = _run_no_network("read", listed, str(both))
    assert proc.returncode == 0, proc.stderr
    trusted = ["trusted", ["signed"], []]
    untrusted = ["valid", ["declared"], ["c2pa.untrusted"]]
    remote = [None, [], ["c2pa.remote_manifest"]]
    assert json.loads(proc.stdout) == [trusted, untrusted, untrusted] * 4 + [remote] * 3


# ------------------------------------------------------------------------------------------- 9: memory limit

_RLIMIT_SCRIPT = textwrap.dedent("""
    import resource, sys
    limit = int(sys.argv[1]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from gcage_fast.evidence.c2pa_manifest import DEFAULT_TRUST_ANCHORS, read_c2pa
    data = open(sys.argv[2], "rb").read()
    print(read_c2pa(data, "JPEG", sys.argv[3])[0].state, read_c2pa(data, "JPEG", DEFAULT_TRUST_ANCHORS)[0].state)
""")


@pytest.mark.parametrize("mib", [4096, 1024, 128])
def test_works_under_address_space_limit(signed, anchors, tmp_path, mib):
    path = tmp_path / "ai.jpg"
    path.write_bytes(signed["JPEG"])
    proc = subprocess.run([sys.executable, "-c", _RLIMIT_SCRIPT, str(mib), str(path), anchors],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["trusted", "valid"]


# ------------------------------------------------------------------------------------------- 10: anchors


def test_check_trust_anchors_messages(tmp_path, anchors):
    check_trust_anchors(anchors)
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError) as exc:
        check_trust_anchors(str(missing))
    assert str(exc.value) == f"--c2pa-trust-anchors {missing}: cannot read the file (No such file or directory)"

    with pytest.raises(ConfigError) as exc:
        check_trust_anchors(str(tmp_path))
    assert str(exc.value) == f"--c2pa-trust-anchors {tmp_path}: cannot read the file (Is a directory)"

    text = tmp_path / "notes.pem"
    text.write_text("these are not certificates\n")
    with pytest.raises(ConfigError) as exc:
        check_trust_anchors(str(text))
    assert str(exc.value) == (f"--c2pa-trust-anchors {text}: no PEM certificate found (expected one or more "
                              "'-----BEGIN CERTIFICATE-----' blocks)")

    bad = tmp_path / "bad.pem"
    bad.write_text(Path(anchors).read_text() + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError) as exc:
        check_trust_anchors(str(bad))
    assert str(exc.value) == f"--c2pa-trust-anchors {bad}: certificate 2 is not a valid X.509 certificate"
    with pytest.raises(ConfigError):
        read_c2pa(sign_image(make_image("JPEG", 51), "JPEG", make_chain()), "JPEG", str(bad))


def test_forked_child_builds_its_own_context(signed, anchors):
    import os

    read_c2pa(signed["JPEG"], "JPEG", anchors)  # the parent's context is now cached
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        info = read_c2pa(signed["JPEG"], "JPEG", anchors)[0]
        os.write(write, (info.state if info else "none").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 64) == b"trusted"
    os.close(read)


def test_import_is_cheap():
    code = "import sys, gcage_fast.evidence.c2pa_manifest; print('c2pa' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.strip() == "False", proc.stderr

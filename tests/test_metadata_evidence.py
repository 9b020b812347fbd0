"""Metadata provenance readers: the rule table (a positive and a near miss per rule), IPTC/XMP DigitalSourceType in
each container, hostile XMP and containers (entities, 50 MB packets, zlib bombs, truncation, fuzz) and, where the
shared data set is present, exact catch counts on it with zero hits on the real photographs."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

import genmeta
from gcage_fast.evidence import metadata
from gcage_fast.evidence.generators import RULES, Rule, match_generators
from gcage_fast.evidence.metadata import FLAGS, read_metadata, text_fields
from gcage_fast.evidence.types import Evidence

BROAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "broad"
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _rule_id(rule: Rule) -> str:
    return f"{rule.generator}-{rule.fields[0]}"


def _file_with(field: str, value: str) -> tuple[bytes, str]:
    """A file carrying ``value`` in ``field`` (the container the field name says) and its format."""
    kind, _, name = field.partition(":")
    if kind == "png":
        return genmeta.png([genmeta.itxt_chunk(name, value.encode("utf-8"))]), "PNG"
    if field == "exif:UserComment":
        return genmeta.jpeg([genmeta.jpeg_exif(genmeta.exif_bytes(user_comment=genmeta.user_comment(value)))]), "JPEG"
    if kind == "exif":
        return genmeta.webp([genmeta.webp_exif(genmeta.exif_bytes({name: value}))]), "WEBP"
    if field == "jpeg:comment":
        return genmeta.jpeg([genmeta.jpeg_comment(value)]), "JPEG"
    element = "exif:" + name if kind == "xmp-exif" else field
    return genmeta.jpeg([genmeta.jpeg_xmp(genmeta.xmp_packet(elems={element: escape(value)}))]), "JPEG"


def _fields_of(rule: Rule) -> list[str]:
    # exif ASCII tags hold ASCII only; a non-ASCII example is tested in the program fields that carry UTF-8
    ascii_tag = {f for f in rule.fields if f.startswith("exif:") and f != "exif:UserComment"}
    return [f for f in rule.fields if rule.example.isascii() or f not in ascii_tag]


RULE_FIELDS = [pytest.param(rule, f, id=f"{_rule_id(rule)}@{f}") for rule in RULES for f in _fields_of(rule)]


# ------------------------------------------------------------------------------------------------------ the table


@pytest.mark.parametrize("rule", RULES, ids=_rule_id)
def test_every_rule_is_documented_with_examples(rule):
    assert rule.example and rule.near_miss, "every rule needs an example and a near miss"
    assert rule.source.startswith("https://")
    assert rule.claim in ("ai_generated", "ai_edited")
    assert rule.search(rule.example) is not None
    assert rule.search(rule.near_miss) is None


@pytest.mark.parametrize(("rule", "field"), RULE_FIELDS)
def test_rule_positive_in_a_file(rule, field):
    data, fmt = _file_with(field, rule.example)
    evidence, flags = read_metadata(data, fmt)
    text = rule.search(rule.example)
    assert evidence == [
        Evidence("metadata", rule.claim, rule.generator, f"{field}: {metadata._short(text)}", "declared")
    ]
    assert flags == []
    assert (rule, text) in match_generators(field, rule.example)


@pytest.mark.parametrize(("rule", "field"), RULE_FIELDS)
def test_rule_near_miss_in_a_file(rule, field):
    data, fmt = _file_with(field, rule.near_miss)
    assert read_metadata(data, fmt) == ([], [])
    assert all(r is not rule for r, _ in match_generators(field, rule.near_miss))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("png:parameters", "quality: 95, optimize: true"),
        ("png:parameters", "Steps: 20 then Sample: later"),
        ("jpeg:comment", "Made with love"),
        ("exif:Software", "Adobe Photoshop 2024"),
        ("exif:Software", "Adobe Photoshop 2024 (Firefly generative fill ready)"),
        ("exif:Make", "Canon"),
        ("exif:Model", "Canon EOS R5"),
        ("xmp:CreatorTool", "GIMP 2.10"),
        ("xmp:CreatorTool", "Affinity Designer 2"),
        ("png:prompt", '{"prompt": "a red fox", "seed": 42}'),
        ("png:prompt", "a red fox in the snow"),
        ("png:workflow", '{"nodes": "a list of steps"}'),
        ("png:Software", "Adobe ImageReady"),
        ("dc:description", "A holiday photo. Job ID: 42"),
        ("photoshop:Credit", "Photo: Jane Doe / Google"),
    ],
)
def test_near_misses_give_nothing(field, value):
    data, fmt = _file_with(field, value)
    assert read_metadata(data, fmt) == ([], [])


def test_one_item_per_generator_and_field():
    graph = '{"3": {"inputs": {"seed": 1}, "class_type": "KSampler"}, "4": {"inputs": {}, "class_type": "VAEDecode"}}'
    data = genmeta.png([genmeta.text_chunk("prompt", graph), genmeta.text_chunk("prompt", graph)])
    evidence, _ = read_metadata(data, "PNG")
    assert [(e.generator, e.detail.split(":")[0] + ":" + e.detail.split(":")[1]) for e in evidence] == [
        ("ComfyUI", "png:prompt")
    ]


def test_user_comment_charsets_and_xp_comment():
    a1111 = "a fox\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7"
    for comment in (
        genmeta.user_comment(a1111, "UNICODE", big_endian=True),
        genmeta.user_comment(a1111, "UNICODE", big_endian=False),
        genmeta.user_comment(a1111, "ASCII"),
    ):
        data = genmeta.jpeg([genmeta.jpeg_exif(genmeta.exif_bytes(user_comment=comment))])
        assert ("exif:UserComment", a1111) in text_fields(data, "JPEG")
        evidence, flags = read_metadata(data, None)
        assert [e.detail for e in evidence] == ["exif:UserComment: Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7"]
        assert flags == []
    data = genmeta.jpeg([genmeta.jpeg_exif(genmeta.exif_bytes({"Artist": "me"}, xp_comment="hello"))])
    assert text_fields(data, "JPEG") == [("exif:Artist", "me"), ("exif:XPComment", "hello")]


def test_png_text_chunk_kinds():
    data = genmeta.png(
        [
            genmeta.text_chunk("Software", "NovelAI"),
            genmeta.ztxt_chunk("Source", b"Stable Diffusion XL C1E1DE52"),
            genmeta.itxt_chunk("Comment", b'{"steps": 28, "uc": "lowres", "n_samples": 1}', compressed=True),
            genmeta.png_chunk(b"eXIf", genmeta.exif_bytes({"Software": "Midjourney"})[6:]),
        ]
    )
    evidence, flags = read_metadata(data, "PNG")
    assert [(e.generator, e.detail) for e in evidence] == [
        ("NovelAI", "png:Software: NovelAI"),
        ("NovelAI", "png:Source: Stable Diffusion XL C1E1DE52"),
        ("NovelAI", 'png:Comment: "steps": 28'),
        ("Midjourney", "exif:Software: Midjourney"),
    ]
    assert flags == []


def test_gif_tiff_and_extended_xmp():
    assert text_fields(genmeta.gif(comment="made by hand"), "GIF") == [("gif:comment", "made by hand")]
    evidence, flags = read_metadata(genmeta.gif(xmp=genmeta.dst_packet("trainedAlgorithmicMedia")), None)
    assert [(e.kind, e.claim) for e in evidence] == [("iptc", "ai_generated")] and flags == []
    tiff = genmeta.encoded("TIFF", tiffinfo={0x0131: "ComfyUI"})
    assert read_metadata(tiff, "TIFF")[0] == [
        Evidence("metadata", "ai_generated", "ComfyUI", "exif:Software: ComfyUI", "declared")
    ]
    packet = genmeta.dst_packet("compositeWithTrainedAlgorithmicMedia", tool="Photo editor 5")
    evidence, flags = read_metadata(genmeta.jpeg(genmeta.jpeg_extended_xmp(packet, chunk=200)), "JPEG")
    assert evidence == [
        Evidence("iptc", "ai_edited", "Photo editor 5",
                 "XMP Iptc4xmpExt:DigitalSourceType=compositeWithTrainedAlgorithmicMedia", "declared")
    ]
    assert flags == []


# ------------------------------------------------------------------------------------------ IPTC DigitalSourceType

TERMS = [
    ("trainedAlgorithmicMedia", "ai_generated"),
    ("compositeWithTrainedAlgorithmicMedia", "ai_edited"),
    ("digitalCapture", "capture"),
    ("somethingNew", "unknown"),
]
CONTAINERS = {
    "jpeg-app1": lambda p: (genmeta.jpeg([genmeta.jpeg_xmp(p)]), "JPEG"),
    "png-itxt": lambda p: (genmeta.png([genmeta.itxt_chunk("XML:com.adobe.xmp", p)]), "PNG"),
    "png-itxt-z": lambda p: (genmeta.png([genmeta.itxt_chunk("XML:com.adobe.xmp", p, compressed=True)]), "PNG"),
    "webp-xmp": lambda p: (genmeta.webp([genmeta.webp_xmp(p)]), "WEBP"),
}


@pytest.mark.parametrize("container", sorted(CONTAINERS))
@pytest.mark.parametrize(("term", "claim"), TERMS)
@pytest.mark.parametrize("as_attr", [True, False], ids=["attribute", "element"])
@pytest.mark.parametrize("tool", [None, "GIMP 2.10"])
def test_digital_source_type(container, term, claim, as_attr, tool):
    data, fmt = CONTAINERS[container](genmeta.dst_packet(term, tool=tool, as_attr=as_attr))
    for given in (fmt, None):
        assert read_metadata(data, given) == (
            [Evidence("iptc", claim, tool, f"XMP Iptc4xmpExt:DigitalSourceType={term}", "declared")],
            [],
        )


def test_digital_source_type_in_any_namespace_with_a_generator_tool():
    packet = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:o="http://example.org/other/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        b' xmp:CreatorTool="Adobe Firefly">'
        b"<o:DigitalSourceType>https://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia/"
        b"</o:DigitalSourceType></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    evidence, flags = read_metadata(genmeta.webp([genmeta.webp_xmp(packet)]), "WEBP")
    assert evidence == [
        Evidence("iptc", "ai_generated", "Adobe Firefly", "XMP DigitalSourceType=trainedAlgorithmicMedia", "declared"),
        Evidence("metadata", "ai_generated", "Adobe Firefly", "xmp:CreatorTool: Adobe Firefly", "declared"),
    ]
    assert flags == []


# ------------------------------------------------------------------------------------------------------- hostile


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_billion_laughs_is_refused(container):
    data, fmt = CONTAINERS[container](genmeta.BILLION_LAUGHS)
    assert read_metadata(data, fmt) == ([], ["xmp.forbidden"])


def test_external_entity_reads_no_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("trainedAlgorithmicMedia")
    data = genmeta.png([genmeta.itxt_chunk("XML:com.adobe.xmp", genmeta.external_entity_packet(str(secret)))])
    assert read_metadata(data, "PNG") == ([], ["xmp.forbidden"])
    assert text_fields(data, "PNG") == []


def test_malformed_xmp_is_flagged():
    data = genmeta.jpeg([genmeta.jpeg_xmp(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>")])
    assert read_metadata(data, "JPEG") == ([], ["xmp.malformed"])


@pytest.mark.parametrize("container", ["png-itxt", "webp-xmp"])
def test_50mb_xmp_is_not_parsed(container):
    data, fmt = CONTAINERS[container](genmeta.big_xmp(50 * 2**20))
    assert read_metadata(data, fmt) == ([], ["xmp.too_large"])
    # under the bound the same packet kind is parsed (so the flag is about size, not content)
    small, fmt = CONTAINERS[container](genmeta.big_xmp(2**16))
    assert [e.claim for e in read_metadata(small, fmt)[0]] == ["ai_generated"]


def test_50mb_xmp_under_a_1gib_address_space_limit():
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1024 * 2**20, 1024 * 2**20))
        sys.path[:0] = [{str(TESTS)!r}, {str(REPO)!r}]
        import genmeta
        from gcage_fast.evidence.metadata import read_metadata
        for make in (lambda p: genmeta.png([genmeta.itxt_chunk("XML:com.adobe.xmp", p)]),
                     lambda p: genmeta.webp([genmeta.webp_xmp(p)])):
            print(read_metadata(make(genmeta.big_xmp(50 * 2**20)), None))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["([], ['xmp.too_large'])"] * 2


@pytest.mark.parametrize("kind", ["zTXt", "iTXt", "iTXt-xmp"])
def test_zlib_bomb_is_bounded(kind):
    bomb = b"\x00" * (64 * 2**20)
    if kind == "zTXt":
        chunk = genmeta.ztxt_chunk("parameters", bomb)
    else:
        chunk = genmeta.itxt_chunk("XML:com.adobe.xmp" if kind == "iTXt-xmp" else "parameters", bomb, compressed=True)
    assert len(chunk) < 200_000
    assert read_metadata(genmeta.png([chunk]), "PNG") == ([], ["metadata.too_large"])
    # under a bound smaller than the compressed chunk itself the chunk is not even inflated
    small = "xmp.too_large" if kind == "iTXt-xmp" else "metadata.too_large"
    assert read_metadata(genmeta.png([chunk]), "PNG", max_bytes=2**10) == ([], [small])


def test_text_chunk_over_the_bound_is_skipped():
    value = "Steps: 20, Sampler: Euler a " + "x" * 5000
    data = genmeta.png([genmeta.text_chunk("parameters", value)])
    assert read_metadata(data, "PNG", max_bytes=1000) == ([], ["metadata.too_large"])
    assert len(read_metadata(data, "PNG")[0]) == 1


def test_truncated_lengths_are_flagged():
    png = genmeta.png([genmeta.png_chunk(b"tEXt", b"parameters\x00Steps: 20, Sampler: Euler", length=10**6)])
    assert read_metadata(png, "PNG") == ([], ["metadata.truncated"])
    webp = genmeta.webp([genmeta.riff_chunk(b"XMP ", genmeta.dst_packet("digitalCapture"), length=10**6)])
    assert read_metadata(webp, "WEBP") == ([], ["metadata.truncated"])
    seg = genmeta.jpeg_xmp(genmeta.dst_packet("trainedAlgorithmicMedia"))
    jpeg = genmeta.jpeg([seg])
    assert read_metadata(jpeg[: 2 + len(seg) // 2], "JPEG") == ([], ["metadata.truncated"])
    gif = genmeta.gif(comment="x" * 200)
    assert read_metadata(gif[: gif.index(b"\x21\xfe") + 50], "GIF") == ([], ["metadata.truncated"])
    assert read_metadata(gif[:60], "GIF") == ([], ["metadata.truncated"])  # inside the colour table


def _valid_files() -> list[tuple[bytes, str]]:
    a1111 = "a fox\nSteps: 20, Sampler: Euler a, CFG scale: 7"
    exif = genmeta.exif_bytes({"Software": "Midjourney", "Make": "Canon"}, user_comment=genmeta.user_comment(a1111))
    packet = genmeta.dst_packet("trainedAlgorithmicMedia", tool="Adobe Firefly")
    graph = '{"3": {"inputs": {"seed": 1}, "class_type": "KSampler"}}'
    return [
        (genmeta.jpeg([genmeta.jpeg_exif(exif), genmeta.jpeg_xmp(packet), genmeta.jpeg_comment("hi")]), "JPEG"),
        (genmeta.jpeg(genmeta.jpeg_extended_xmp(packet, chunk=100)), "JPEG"),
        (
            genmeta.png(
                [
                    genmeta.text_chunk("prompt", graph),
                    genmeta.ztxt_chunk("parameters", a1111.encode()),
                    genmeta.itxt_chunk("XML:com.adobe.xmp", packet, compressed=True),
                    genmeta.png_chunk(b"eXIf", exif[6:]),
                ]
            ),
            "PNG",
        ),
        (genmeta.webp([genmeta.webp_exif(exif), genmeta.webp_xmp(packet)]), "WEBP"),
        (genmeta.gif(comment="hello", xmp=packet), "GIF"),
        (genmeta.encoded("TIFF", tiffinfo={0x0131: "ComfyUI", 700: packet}), "TIFF"),
    ]


def test_valid_fuzz_bases_carry_evidence():
    for data, fmt in _valid_files():
        evidence, flags = read_metadata(data, fmt)
        assert evidence and flags == [], fmt


def test_seeded_fuzz_never_raises():
    rng = random.Random(1234)
    bases = _valid_files()
    kinds = Counter()
    for _ in range(200):
        data, fmt = rng.choice(bases)
        for _ in range(rng.randint(1, 3)):
            data = genmeta.mutate(data, rng)
        for given in (fmt, None):
            evidence, flags = read_metadata(data, given)
            assert all(isinstance(e, Evidence) for e in evidence)
            assert set(flags) <= set(FLAGS) and "metadata.error" not in flags, flags
            kinds.update(flags)
            assert isinstance(text_fields(data, given), list)
    assert kinds  # the mutations did reach the error paths


def test_every_truncation_never_raises():
    for data, fmt in _valid_files()[:4]:
        for cut in range(0, len(data), 7):
            evidence, flags = read_metadata(data[:cut], fmt)
            assert "metadata.error" not in flags


def test_unknown_or_pixel_only_formats_give_nothing():
    assert read_metadata(b"", None) == ([], [])
    assert read_metadata(b"not an image at all", None) == ([], [])
    assert read_metadata(genmeta.encoded("BMP"), "BMP") == ([], [])
    assert read_metadata(genmeta.encoded("PNG"), "PNG") == ([], [])


# ---------------------------------------------------------------------------------------------- the broad data set

#: files of each ai/<generator> folder of the broad set that carry declared-generator metadata (all ComfyUI graphs:
#: every file from comfyanonymous/ComfyUI_examples, none of the others)
BROAD_CAUGHT = {
    "auraflow": 1, "chroma": 1, "cosmos-predict2": 1, "flux-2-dev": 1, "flux-dev": 3, "flux-kontext-dev": 1,
    "flux-schnell": 1, "hidream-e1": 1, "hidream-i1": 1, "hunyuan-dit": 1, "lumina-2": 1, "omnigen2": 1,
    "qwen-image": 1, "qwen-image-edit": 1, "sd-1.5": 1, "sd-1.x-finetune": 3, "sd-2.x-finetune": 1,
    "sd-3-medium": 1, "sd-3.5-large": 1, "sdxl": 1, "sdxl-lcm": 1, "sdxl-turbo": 1, "stable-cascade": 1,
    "z-image-turbo": 1,
}


@pytest.mark.skipif(not (BROAD / "manifest.csv").is_file(), reason="../shared/data is absent")
def test_broad_set_catch_counts_and_no_hit_on_real():
    caught: Counter[str] = Counter()
    real_hits = []
    with open(BROAD / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            evidence, flags = read_metadata((BROAD / row["relpath"]).read_bytes(), row["format"])
            assert flags == [], row["relpath"]
            if row["label"] == "real":
                real_hits += [row["relpath"]] if evidence else []
                continue
            if evidence:
                caught[row["generator"]] += 1
                assert {(e.kind, e.claim, e.generator) for e in evidence} == {("metadata", "ai_generated", "ComfyUI")}
                assert sorted(e.detail.split(":")[1] for e in evidence) == ["prompt", "workflow"]
    assert real_hits == []
    assert dict(caught) == BROAD_CAUGHT
    assert caught["dall-e-2"] == 0 and caught["midjourney"] == 0 and caught["gemini-2.5-flash-image"] == 0

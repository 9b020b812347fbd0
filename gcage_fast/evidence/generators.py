"""The one rule table of declared generators: which metadata field, holding which text, says which AI tool wrote the
file.

Field names are those the metadata readers emit (gcage_fast.evidence.metadata):
``png:<keyword>`` for a PNG tEXt/zTXt/iTXt chunk, ``exif:<Tag>`` for the EXIF IFDs (Software, Make, Model,
ImageDescription, Artist, UserComment, XPComment, XPAuthor), XMP properties by their conventional prefix
(``xmp:CreatorTool``, ``dc:description``, ``photoshop:Credit``, ``tiff:Software``), ``jpeg:comment`` and
``gif:comment``. A rule's ``field`` is one name, a glob, or a tuple of them.

Every rule names the public document that shows the tool writes that text (``source``) and carries one ``example``
value it must match and one ``near_miss`` value it must not (the tests run both). Patterns are anchored or tied to
a tool-specific structure, never bare substrings that a camera's Make or "Adobe Photoshop 2024" would hit.
Pure Python; never reads a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field as dc_field
from fnmatch import fnmatchcase
from functools import lru_cache

__all__ = ["Rule", "RULES", "TOOL_FIELDS", "match_generators"]

#: fields where a program names itself (XMP CreatorTool, EXIF/TIFF Software, PNG Software text)
TOOL_FIELDS = ("xmp:CreatorTool", "exif:Software", "tiff:Software", "png:Software", "xmp-exif:Software")
DESCRIPTION_FIELDS = ("png:Description", "exif:ImageDescription", "dc:description", "xmp-exif:UserComment")
A1111_FIELDS = ("png:parameters", "exif:UserComment", "jpeg:comment")


@dataclass(frozen=True)
class Rule:
    """One declared-generator rule: ``pattern`` searched in the value of a ``field`` (name, glob or tuple)."""

    field: str | tuple[str, ...]
    pattern: re.Pattern[str] | str
    generator: str
    claim: str
    source: str  # public URL of the document or code that shows the tool writes this
    note: str = ""
    example: str = dc_field(default="", compare=False)  # a value the rule must match (tests)
    near_miss: str = dc_field(default="", compare=False)  # a similar value it must not match (tests)

    def __post_init__(self) -> None:
        if isinstance(self.pattern, str):
            object.__setattr__(self, "pattern", re.compile(self.pattern))

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,) if isinstance(self.field, str) else self.field

    def applies_to(self, name: str) -> bool:
        return any(fnmatchcase(name, glob) for glob in self.fields)

    def search(self, value: str) -> str | None:
        """The matched text (the last group that matched, else the whole match), or None."""
        m = self.pattern.search(value)  # type: ignore[union-attr]
        if m is None:
            return None
        return (m.group(m.lastindex) if m.lastindex else m.group(0)) or m.group(0) or value[:80]


_A1111 = "https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/images.py"
_COMFY = "https://github.com/comfyanonymous/ComfyUI/blob/master/nodes.py"
_COMFY_WEBP = "https://github.com/comfyanonymous/ComfyUI/blob/master/comfy_extras/nodes_images.py"
_NAI = "https://github.com/Eta0/naipng"
_INVOKE = "https://github.com/invoke-ai/InvokeAI/blob/main/invokeai/app/services/image_files/image_files_disk.py"
_INVOKE_LEGACY = (
    "https://github.com/receyuki/stable-diffusion-prompt-reader/blob/master/sd_prompt_reader/image_data_reader.py"
)
_MJ = (
    "https://iptc.org/news/midjourney-and-shutterstock-ai-sign-up-to-use-of-iptc-digital-source-type-to-signal-"
    "generated-ai-content/"
)
_GOOGLE = "https://iptc.org/news/google-announces-use-of-iptc-metadata-for-generative-ai-images/"

RULES: tuple[Rule, ...] = (
    Rule(
        A1111_FIELDS,
        r"(?m)^(?=[^\n]*\bSampler: )[^\n]*?\b(Steps: \d{1,6}, [^\n]{0,60})",
        "Stable Diffusion web UI (AUTOMATIC1111/Forge/SD.Next)",
        "ai_generated",
        _A1111,
        "infotext: PNG text 'parameters', JPEG/WebP EXIF UserComment; the last line is 'Steps: N, Sampler: ...'. "
        "Patterns here scan each line a bounded number of times (values reach megabytes)",
        example="a red fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512",
        near_miss="parameters of the export: quality 90, steps of the workflow: none",
    ),
    Rule(
        "png:prompt",
        r'(?s)\A\s*\{\s*"[^"]{1,64}"\s*:\s*\{(?=.*?"inputs"\s*:)(?=.*?("class_type"\s*:\s*"[^"]{1,100}"))',
        "ComfyUI",
        "ai_generated",
        _COMFY,
        "SaveImage writes the API prompt graph: JSON {node id: {inputs, class_type}}",
        example='{"3": {"inputs": {"seed": 1, "steps": 20}, "class_type": "KSampler"}}',
        near_miss='{"prompt": "a red fox", "negative": "blurry", "class": "animal"}',
    ),
    Rule(
        "png:workflow",
        r'(?s)\A\s*\{(?=.*?"links"\s*:)(?=.*?("nodes"\s*:\s*\[))',
        "ComfyUI",
        "ai_generated",
        _COMFY,
        "SaveImage writes the UI workflow: JSON with 'nodes' and 'links' arrays",
        example='{"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}], "links": []}',
        near_miss='{"workflow": "export for print", "steps": ["crop", "resize"]}',
    ),
    Rule(
        ("exif:Make", "exif:Model"),
        r"\A((?:prompt|workflow):\s*\{)",
        "ComfyUI",
        "ai_generated",
        _COMFY_WEBP,
        "SaveAnimatedWEBP stores 'prompt:{json}' / 'workflow:{json}' in the EXIF Model / Make tags",
        example='workflow:{"nodes": [], "links": []}',
        near_miss="Canon",
    ),
    Rule(
        ("png:Software", "exif:Software"),
        r"\A(NovelAI)\s*\Z",
        "NovelAI",
        "ai_generated",
        _NAI,
        "NovelAI image generation writes PNG text Software=NovelAI (with Source and Comment)",
        example="NovelAI",
        near_miss="NovelAI fan art studio 2.1",
    ),
    Rule(
        "png:Source",
        r"\A((?:Stable Diffusion|NovelAI Diffusion)(?: [\w.]{1,40}){0,8}? [0-9A-F]{8})\s*\Z",
        "NovelAI",
        "ai_generated",
        _NAI,
        "PNG text Source names the NovelAI model and its hash, e.g. 'Stable Diffusion XL C1E1DE52'",
        example="Stable Diffusion XL C1E1DE52",
        near_miss="Stable Diffusion tutorial screenshot",
    ),
    Rule(
        "png:Comment",
        r'(?s)\A\s*\{(?=.*?"(?:uc|n_samples|noise_schedule)"\s*:)(?=.*?("steps"\s*:\s*\d+))',
        "NovelAI",
        "ai_generated",
        _NAI,
        "PNG text Comment is the JSON of the generation settings (steps, scale, uc, n_samples, ...)",
        example='{"prompt": "a red fox", "steps": 28, "scale": 5.0, "uc": "lowres", "n_samples": 1}',
        near_miss='{"comment": "scanned at 600 dpi", "steps": 3}',
    ),
    Rule(
        ("png:invokeai_metadata", "png:invokeai_graph"),
        r'(?s)\A\s*\{.*?("(?:positive_prompt|generation_mode|app_version|model|nodes|id)"\s*:)',
        "InvokeAI",
        "ai_generated",
        _INVOKE,
        "InvokeAI 3+ writes PNG text invokeai_metadata (and invokeai_workflow / invokeai_graph) as JSON",
        example='{"positive_prompt": "a red fox", "seed": 1, "model": {"name": "sdxl"}}',
        near_miss="not json",
    ),
    Rule(
        "png:sd-metadata",
        r'(?s)\A\s*\{.*?("(?:image|model_weights|app_id|app_version)"\s*:)',
        "InvokeAI",
        "ai_generated",
        _INVOKE_LEGACY,
        "InvokeAI 2.x wrote PNG text sd-metadata (JSON with model_weights, image, app_id)",
        example='{"model": "stable diffusion", "model_weights": "stable-diffusion-1.5", "image": {"prompt": "a"}}',
        near_miss="plain text",
    ),
    Rule(
        "png:Dream",
        r"(?m)^(?=[^\n]*?\s-S ?\d)[^\n]*?\s(-s ?\d{1,6}\b[^\n]{0,40})",
        "InvokeAI",
        "ai_generated",
        _INVOKE_LEGACY,
        "early InvokeAI (lstein/stable-diffusion 'dream') wrote PNG text Dream: '\"prompt\" -s 50 -S 42 ...'",
        example='"a red fox" -s 50 -S 3852214085 -W 512 -H 512 -C 7.5 -A k_lms',
        near_miss="I had a dream last night",
    ),
    Rule(
        DESCRIPTION_FIELDS,
        r"(Job ID: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})",
        "Midjourney",
        "ai_generated",
        _MJ,
        "midjourney.com downloads carry the prompt then 'Job ID: <uuid>' in Description (PNG text / XMP); "
        "Midjourney also writes IPTC DigitalSourceType (read as kind 'iptc')",
        example="a red fox --ar 2:1 --v 6 Job ID: a7421d2f-b262-44f9-977c-ac23e9c7d3e3",
        near_miss="Job ID: 1234 (print shop order)",
    ),
    Rule(
        "photoshop:Credit",
        r"\A(Made with Google AI)\s*\Z",
        "Google AI (Gemini / Imagen)",
        "ai_generated",
        _GOOGLE,
        "Google's generative images carry IPTC Credit Line 'Made with Google AI' beside DigitalSourceType",
        example="Made with Google AI",
        near_miss="Made with love",
    ),
    Rule(
        "photoshop:Credit",
        r"\A(Edited with Google AI)\s*\Z",
        "Google AI (Photos Magic Editor)",
        "ai_edited",
        "https://blog.google/products/photos/google-photos-ai-editing-transparency/",
        "Google Photos AI edits write IPTC metadata saying the image was edited with Google AI",
        example="Edited with Google AI",
        near_miss="Edited with Google Photos",
    ),
    Rule(
        TOOL_FIELDS,
        r"\A(Adobe Firefly)\b",
        "Adobe Firefly",
        "ai_generated",
        "https://www.adobe.com/products/firefly.html",
        "product name as a program field; anchored, so 'Adobe Photoshop 2024' does not match",
        example="Adobe Firefly",
        near_miss="Adobe Photoshop 2024 (Windows)",
    ),
    Rule(
        TOOL_FIELDS,
        r"\A((?:OpenAI )?DALL[\u00b7\-. ]?E(?: ?[23])?)\b",
        "OpenAI DALL-E",
        "ai_generated",
        "https://openai.com/index/dall-e-3/",
        "product name as a program field (DALL-E, DALL\u00b7E 3)",
        example="DALL\u00b7E 3",
        near_miss="Dallas Edit Suite 4",
    ),
    Rule(
        TOOL_FIELDS,
        r"\A(Midjourney)\b",
        "Midjourney",
        "ai_generated",
        "https://docs.midjourney.com/",
        "product name as a program field",
        example="Midjourney",
        near_miss="Mid-journey travel camera app",
    ),
    Rule(
        TOOL_FIELDS,
        r"\A((?:Stability AI )?Stable ?Diffusion)\b",
        "Stable Diffusion",
        "ai_generated",
        "https://github.com/Stability-AI/stablediffusion",
        "model name as a program field",
        example="Stable Diffusion XL",
        near_miss="Stable Image Stabilizer 2.0",
    ),
    Rule(
        TOOL_FIELDS,
        r"\A(ComfyUI)\b",
        "ComfyUI",
        "ai_generated",
        "https://github.com/comfyanonymous/ComfyUI",
        "program name as a program field",
        example="ComfyUI",
        near_miss="GIMP 2.10",
    ),
    Rule(
        TOOL_FIELDS,
        r"\A((?:Google )?(?:Imagen|Gemini))\b",
        "Google AI (Gemini / Imagen)",
        "ai_generated",
        "https://deepmind.google/models/imagen/",
        "model name as a program field",
        example="Google Imagen 3",
        near_miss="ImageMagick 7.1.1",
    ),
    Rule(
        TOOL_FIELDS,
        r"\A(Microsoft Designer|(?:Microsoft )?Bing Image Creator)\b",
        "Microsoft Designer / Bing Image Creator",
        "ai_generated",
        "https://www.bing.com/images/create",
        "product name as a program field; bare 'Designer' (Affinity Designer) does not match",
        example="Microsoft Designer",
        near_miss="Affinity Designer 2",
    ),
)


@lru_cache(maxsize=1024)
def _rules_for(field: str) -> tuple[Rule, ...]:
    return tuple(rule for rule in RULES if rule.applies_to(field))


def match_generators(field: str, value: str) -> list[tuple[Rule, str]]:
    """The rules of RULES that apply to ``field`` and match ``value``, each with the matched text."""
    found = []
    for rule in _rules_for(field):
        text = rule.search(value)
        if text is not None:
            found.append((rule, text))
    return found

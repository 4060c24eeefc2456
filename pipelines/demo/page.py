"""`demo/index.html`: one self-contained page (every image inline as a data: URI) of a finished
demo flow, beside `summary.json` (the same facts as JSON).

On load, a small inline script checks that every <img> decoded (complete, naturalWidth > 0)
and writes the count into the DOM (`<body data-images-ok="12/12">`), so a headless browser can
tell whether the page renders (tests/e2e/test_demo.py).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup, escape

from pipelines.demo.flow import DemoResult


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def marked(text: str, spans: Sequence[tuple[int, int, str]]) -> Markup:
    """`text` as HTML with each [start, end) span wrapped in <mark class=CLASS>; overlapping
    spans keep the first."""
    out, at = [], 0
    for start, end, css in sorted(spans):
        if start < at or end <= start:
            continue
        out += [escape(text[at:start]), Markup(f'<mark class="{css}">'), escape(text[start:end])]
        out.append(Markup("</mark>"))
        at = end
    out.append(escape(text[at:]))
    return Markup("").join(out)


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Concord demo</title>
<style>
 body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
        padding: 0 1em; }
 h1 { margin-bottom: 0.1em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
 .sub { color: #666; } .mono, pre { font-family: ui-monospace, monospace; font-size: 13px; }
 pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; white-space: pre-wrap; }
 img.px { image-rendering: pixelated; border: 1px solid #ccc; }
 .row { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
 figure { margin: 0; text-align: center; font-size: 12px; }
 figure.hit.same img { outline: 3px solid #2a9d4b; }
 figure.gold img { outline: 3px solid #2a9d4b; }
 mark { background: none; } mark.flagged { background: #ffb3b3; }
 mark.changed { text-decoration: underline wavy #c00; text-underline-offset: 3px; }
 mark.flagged.changed { background: #ff8080; }
 mark.mention { background: #cfe3ff; } mark.cue { background: #ffd27a; }
 table { border-collapse: collapse; } td, th { padding: 2px 8px; text-align: left; }
 .bar { display: inline-block; height: 10px; vertical-align: middle; }
 .neg { background: #d33; } .pos { background: #3a7; }
 .verdict { font-size: 20px; font-weight: 600; }
 .biased { color: #c00; } .neutral { color: #2a9d4b; }
 .ok { color: #2a9d4b; } .bad { color: #c00; }
 .swatch { display: inline-block; width: 10px; height: 10px; border: 1px solid #999;
           margin: 0 2px 0 6px; vertical-align: middle; }
 figure.hit { max-width: 150px; }
</style>
</head>
<body data-images-ok="pending">
<h1>Concord, one pass through every service</h1>
<div class="sub">{{ when }} · {{ seconds }} s · held-out data (seed {{ seed }}), models from the
registry, every call over gRPC</div>

<h2>What each step printed</h2>
<pre>{% for s in steps %}{{ "%-13s"|format(s.key) }}{{ s.line }}
{% endfor %}</pre>

{% if search_text %}
<h2>Search by text</h2>
<p>Query: <b>“{{ search_text.query }}”</b>, a caption of held-out scene
<span class="mono">{{ search_text.query_scene }}</span>
(<img class="px" width="48" height="48" alt="the query's scene"
 src="{{ img('scene:' + search_text.query_scene) }}">). Green outline: that scene.</p>
<div class="row">
{% for h in search_text.hits %}
<figure class="hit{% if h.same_scene %} same{% endif %}">
<img class="px" width="112" height="112" alt="hit {{ h.rank }}" src="{{ img(h.image) }}">
<figcaption>#{{ h.rank }} · {{ "%.3f"|format(h.score) }}<br>{{ h.objects|join(", ") }}
{% if h.supported %}<br><span class="ok">supports: {{ h.supported|join(", ") }}</span>{% endif %}
{% if h.contradicted %}<br><span class="bad">contradicts: {{ h.contradicted|join(", ") }}</span>{% endif %}
</figcaption></figure>
{% endfor %}
</div>
{% endif %}

{% if search_image %}
<h2>Search by image</h2>
<div class="row">
<figure><img class="px" width="112" height="112" alt="query image"
 src="{{ img(search_image.query_image) }}"><figcaption>query: {{ search_image.query_scene }}
 drawn again</figcaption></figure>
<div style="width: 20px"></div>
{% for h in search_image.hits %}
<figure class="hit{% if h.same_scene %} same{% endif %}">
<img class="px" width="112" height="112" alt="hit {{ h.rank }}" src="{{ img(h.image) }}">
<figcaption>#{{ h.rank }} · {{ "%.3f"|format(h.score) }}<br>{{ h.objects|join(", ") }}</figcaption>
</figure>
{% endfor %}
</div>
{% endif %}

{% if explain %}
<h2>Score and explain a pair with a wrong word</h2>
<div class="row">
<figure><img class="px" width="160" height="160" alt="the pair's image"
 src="{{ img(explain.image) }}"><figcaption>the image</figcaption></figure>
<div>
<p>Right caption: “{{ explain.right }}” → P(aligned) {{ "%.2f"|format(explain.p_aligned_right) }}<br>
Wrong caption: “{{ explain_text }}” → P(aligned) {{ "%.2f"|format(explain.p_aligned_wrong) }}</p>
<p>Red: words the scorer flags; wavy underline: the word that was changed
({{ explain.changed|join(", ") }}) — <span class="{{ 'ok' if explain.caught else 'bad' }}">
{{ "caught" if explain.caught else "missed" }}</span>.</p>
<table><tr><th>word</th><th>attribution</th><th></th></tr>
{% for w in explain.words %}
<tr><td>{{ word(w) }}</td>
<td class="mono">{{ "%+.2e"|format(w.attribution) }}</td>
<td><span class="bar {{ 'neg' if w.attribution < 0 else 'pos' }}"
 style="width: {{ bar(w.attribution) }}px"></span></td></tr>
{% endfor %}</table>
</div></div>
{% if explain.heatmap %}
<p>Where each word finds its best match in the image (word-patch similarity):</p>
<div class="row">
{% for w in explain.words if w.heat %}
<figure><img class="px" width="112" height="112" alt="heat map of {{ w.word }}"
 src="{{ img(w.heat) }}"><figcaption>{{ word(w) }}</figcaption></figure>
{% endfor %}
</div>
{% endif %}
{% endif %}

{% if generate %}
<h2>Generate an image with its layout, and audit it</h2>
<p>Prompt: “{{ generate.prompt }}” ({{ generate.model }}, {{ generate.seconds }} s)</p>
<div class="row">
<figure><img class="px" width="192" height="192" alt="generated image"
 src="{{ img(generate.image) }}"><figcaption>image</figcaption></figure>
{% if generate.layout %}
<figure><img class="px" width="192" height="192" alt="generated layout"
 src="{{ img(generate.layout) }}"><figcaption>layout:
{% for name, colour in generate.colours.items() %}<span class="swatch"
 style="background: {{ colour }}"></span>{{ name }} {% else %}background only{% endfor %}
</figcaption></figure>
{% endif %}
{% if audit %}
<div><p class="verdict {{ 'ok' if audit.passed else 'bad' }}">audit:
{{ "passes" if audit.passed else "flags words" }}</p>
<p>“{{ audit_text }}”<br>P(aligned) {{ "%.2f"|format(audit.p_aligned) }} ·
CLIPScore {{ "%.3f"|format(audit.clip_score) }} · {{ audit.model }}</p></div>
{% endif %}
</div>
{% endif %}

{% if aligned %}
<h3>Generate until aligned</h3>
<p>The generator audits each try with the scorer and redraws (next seed, more guidance, the
flagged words emphasised) until a try passes; best try {{ aligned.best_try + 1 }}:
<span class="{{ 'ok' if aligned.passed else 'bad' }}">{{ "passes" if aligned.passed else
"no try passed" }}</span> (threshold {{ "%.2f"|format(aligned.min_score) }}).</p>
<div class="row">
<figure><img class="px" width="160" height="160" alt="best aligned image"
 src="{{ img(aligned.image) }}"><figcaption>best try</figcaption></figure>
{% if aligned.layout %}<figure><img class="px" width="160" height="160" alt="its layout"
 src="{{ img(aligned.layout) }}"><figcaption>its layout</figcaption></figure>{% endif %}
<table><tr><th>try</th><th>seed</th><th>guidance</th><th>P(aligned)</th><th>flagged</th></tr>
{% for t in aligned.tries %}<tr><td>{{ t.index + 1 }}</td><td>{{ t.seed }}</td>
<td>{{ "%.1f"|format(t.guidance_scale) }}</td><td>{{ "%.2f"|format(t.p_aligned) }}</td>
<td>{% if t.passed %}<span class="ok">passes</span>{% else %}
{{ t.flagged|map(attribute="word")|join(", ") }}{% endif %}</td></tr>
{% endfor %}</table>
</div>
{% endif %}

{% if link %}
<h2>Link a mention to a knowledge base</h2>
<div class="row">
<figure><img class="px" width="112" height="112" alt="the mention's photo"
 src="{{ img(link.mention_image) }}"><figcaption>the mention's photo</figcaption></figure>
<div><p>“{{ link_text }}”</p>
<p>{{ link.same_name }} of the {{ link.entities }} entities in <span class="mono">{{
link.knowledge_base }}</span> share this name; gold {{ link.gold }}
{% if link.gold_rank %}at rank {{ link.gold_rank }}{% else %}not in the top 3{% endif %}.</p></div>
</div>
<div class="row">
{% for c in link.candidates %}
<figure class="{{ 'gold' if c.gold else '' }}" style="max-width: 220px">
{% if has(c.image) %}<img class="px" width="96" height="96" alt="{{ c.entity_id }}"
 src="{{ img(c.image) }}">{% endif %}
<figcaption><b>{{ loop.index }}. {{ c.entity_id }} {{ c.name }}</b> · {{ "%.3f"|format(c.score) }}
<br>{{ c.description }}</figcaption></figure>
{% endfor %}
</div>
{% endif %}

{% if bias %}
<h2>Check a pair for bias</h2>
<div class="row">
<figure><img class="px" width="160" height="160" alt="the headline's image"
 src="{{ img(bias.image) }}"></figure>
<div><p>“{{ bias_text }}”</p>
<p class="verdict {{ bias.label }}">{{ bias.label|upper }} · P(biased)
{{ "%.2f"|format(bias.probability) }} (threshold {{ bias.threshold }})</p>
<p>Highlighted: the words the model gives as cues. Truth: {{ bias.truth }}; the loaded
words: {{ bias.gold_words|join(", ") }}</p>
<table><tr><th>cue</th><th>what</th><th>weight</th></tr>
{% for c in bias.cues %}<tr><td>{{ c.kind }}</td><td>{{ c.text or c.description }}</td>
<td class="mono">{{ "%+.3f"|format(c.weight) }}</td></tr>{% endfor %}
</table>
<p class="sub">{{ bias.rationale }}</p></div>
</div>
{% endif %}

<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-ok", ok + "/" + images.length);
});
</script>
</body>
</html>
"""


def render_page(result: DemoResult, seed: int) -> str:
    """Returns: the page's HTML."""
    data = {k: s.data for k, s in result.steps.items()}
    explain = data.get("explain")
    audit = data.get("audit")
    link = data.get("link")
    bias = data.get("bias")
    explain_text: Markup | str = ""
    if explain:
        css: dict[tuple[int, int], set[str]] = {}
        for s, e in explain["changed_spans"]:
            css.setdefault((s, e), set()).add("changed")
        for w in explain["words"]:
            if w["misaligned"]:
                css.setdefault((w["span"][0], w["span"][1]), set()).add("flagged")
        spans = [(s, e, " ".join(sorted(c))) for (s, e), c in css.items()]
        explain_text = marked(explain["wrong"], spans)
    peak = max((abs(w["attribution"]) for w in (explain or {}).get("words", [])), default=0.0)

    def bar(value: float) -> int:
        return round(120 * abs(value) / peak) if peak > 0 else 0

    def word(w: dict[str, Any]) -> Markup:
        return (
            Markup('<mark class="flagged">%s</mark>') % w["word"]
            if w["misaligned"]
            else escape(w["word"])
        )

    def img(name: str) -> str:
        return data_uri(result.images[name]) if result.images.get(name) else ""

    def has(name: str) -> bool:
        return bool(result.images.get(name))

    env = Environment(autoescape=True, undefined=StrictUndefined)
    return env.from_string(TEMPLATE).render(
        when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        seconds=f"{result.seconds:.0f}",
        seed=seed,
        steps=list(result.steps.values()),
        search_text=data.get("search_text"),
        search_image=data.get("search_image"),
        explain=explain,
        explain_text=explain_text,
        generate=data.get("generate"),
        audit=audit,
        audit_text=marked(
            audit["prompt"], [(f["span"][0], f["span"][1], "flagged") for f in audit["flagged"]]
        )
        if audit
        else "",
        aligned=data.get("aligned"),
        link=link,
        link_text=marked(link["text"], [(*link["span"], "mention")]) if link else "",
        bias=bias,
        bias_text=marked(
            bias["text"], [(c["span"][0], c["span"][1], "cue") for c in bias["cues"] if c["span"]]
        )
        if bias
        else "",
        img=img,
        has=has,
        bar=bar,
        word=word,
    )


def write_page(result: DemoResult, out_dir: Path, seed: int) -> Path:
    """Write `index.html` and `summary.json` into `out_dir`. Returns: the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "index.html"
    page.write_text(render_page(result, seed), encoding="utf-8")
    summary: dict[str, Any] = {"seed": seed, **result.summary()}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return page

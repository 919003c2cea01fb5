"""Rendering of the coverage report (`properties/coverage.py`): one self-contained HTML page and a PNG.

The page needs nothing from the network: CSS and JS are inline, the table is plain HTML (it reads
without JS; JS only filters and sorts rows). It stays readable at 600 models x 40 properties: the
heatmap scrolls inside its box with sticky property headers, model names and column totals.
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

# outcome -> (CSS class, colour, glyph drawn in the cell so that colour is not the only cue)
STYLE = {
    "failed": ("o-failed", "#d62728", "\u2715"),
    "not built": ("o-notbuilt", "#6a51a3", "\u2205"),
    "finding": ("o-finding", "#f5a623", "!"),
    "pass": ("o-pass", "#2ca25f", ""),
    "skipped": ("o-skipped", "#c9ccd1", "\u2013"),
}
EMPTY_COLOUR = "#f4f4f4"  # no test: the property does not apply to the model, or was not selected
MEANING = {
    "failed": "a test failed or errored (red: a suite bug or a new finding to record)",
    "not built": "the model could not be built tiny or fed (why in the hover text)",
    "finding": "xfailed: an upstream finding recorded in the findings list",
    "pass": "every test of the cell passed",
    "skipped": "skipped (why in the hover text), e.g. no accelerator",
}
OUTCOMES = tuple(STYLE)

CSS = """
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 16px 40px;color:#222}
h1{font-size:20px;margin:14px 0 4px} h2{font-size:16px;margin:24px 0 6px;border-bottom:1px solid #ddd}
.meta{color:#666;margin:0 0 8px} nav a{margin-right:12px}
.chip{display:inline-block;padding:2px 8px;margin:2px 6px 2px 0;border-radius:10px;font-weight:600}
.legend span.sw{display:inline-block;width:14px;height:14px;vertical-align:-2px;margin:0 4px 0 10px;
  border:1px solid #999;text-align:center;font-size:10px;line-height:14px}
.controls{margin:8px 0} .controls label{margin-right:14px}
.scroll{max-height:78vh;overflow:auto;border:1px solid #ccc;position:relative}
table.heat{border-collapse:separate;border-spacing:0;font-size:11px}
table.heat th,table.heat td{padding:0;border-right:1px solid #fff;border-bottom:1px solid #fff}
table.heat thead th{position:sticky;background:#fff;z-index:2}
tr.fam th{top:0;height:18px;font-weight:600;border-left:1px solid #bbb;text-align:left;padding-left:3px;
  white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:0}
tr.prop th{top:19px;height:150px;vertical-align:bottom;border-bottom:1px solid #bbb;width:20px;min-width:20px;
  max-width:20px;overflow:hidden}
tr.prop th span{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap;display:inline-block;
  padding:3px 0;font-weight:400;font-size:10px;line-height:20px;max-height:146px;overflow:hidden;text-overflow:ellipsis}
th.corner{left:0;z-index:4!important;text-align:left;vertical-align:bottom;padding:4px!important;min-width:170px}
tbody th{position:sticky;left:0;background:#fff;z-index:1;text-align:left;font-weight:400;white-space:nowrap;
  padding:0 6px 0 4px!important;max-width:240px;overflow:hidden;text-overflow:ellipsis}
tbody th small{color:#888}
td.c{width:20px;min-width:20px;height:16px;text-align:center;font-size:10px;line-height:16px;cursor:default}
td.c.e{background:#f4f4f4}
td.n,tfoot td{text-align:right;padding:0 4px!important;color:#333;font-variant-numeric:tabular-nums}
td.n{min-width:20px}
td.n.z{color:#ccc} tr.prop th.tot{width:28px;min-width:28px;max-width:28px}
tbody tr:hover th,tbody tr:hover td.n{background:#eef3ff}
tfoot th,tfoot td{position:sticky;background:#f7f7f7;z-index:2;font-size:10px;height:15px}
tfoot th{left:0;z-index:3;text-align:right;padding-right:6px!important;font-weight:600}
td.fb{border-left:1px solid #bbb}
table.list{border-collapse:collapse;margin:4px 0 10px;font-size:12px}
table.list th,table.list td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
table.list td.r{max-width:900px;word-break:break-word}
details{margin:2px 0} summary{cursor:pointer;font-weight:600}
code{font-size:11px}
"""

SCRIPT = """
(function(){
  const body=document.querySelector('table.heat tbody');
  const rows=Array.from(body.rows);
  const q=document.getElementById('q'),mod=document.getElementById('mod'),
        out=document.getElementById('out'),sort=document.getElementById('sort'),
        shown=document.getElementById('shown');
  function apply(){
    const text=q.value.toLowerCase(),m=mod.value,o=out.value;let n=0;
    for(const r of rows){
      const ok=(!text||r.dataset.name.includes(text)||r.dataset.cls.includes(text))&&
               (!m||r.dataset.modality===m)&&(!o||Number(r.dataset[o])>0);
      r.style.display=ok?'':'none'; if(ok)n++;
    }
    shown.textContent=n+' of '+rows.length+' models';
  }
  function order(){
    const k=sort.value;
    const key=r=>k==='name'?[r.dataset.name]:k==='rank'?[Number(r.dataset.rank)]:[-Number(r.dataset[k]),r.dataset.name];
    const sorted=rows.slice().sort((a,b)=>{const x=key(a),y=key(b);
      for(let i=0;i<x.length;i++){if(x[i]<y[i])return -1;if(x[i]>y[i])return 1;}return 0;});
    for(const r of sorted)body.appendChild(r);
  }
  q.addEventListener('input',apply);mod.addEventListener('change',apply);out.addEventListener('change',apply);
  sort.addEventListener('change',order);apply();
})();
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _key(outcome: str) -> str:
    return outcome.replace(" ", "")  # data-* attribute names: "not built" -> "notbuilt"


def _style_rules() -> str:
    rules = []
    for outcome, (css, colour, glyph) in STYLE.items():
        text = "#fff" if outcome in ("failed", "not built", "pass") else "#222"
        rules.append(f".{css}{{background:{colour};color:{text}}}")
        if glyph:
            rules.append(f"td.{css}::after{{content:'{glyph}'}}")
    return "\n".join(rules)


def _cell_title(model: str, prop: dict, cell: dict) -> str:
    counts = ", ".join(f"{n} {o}" for o, n in cell["counts"].items())
    head = f"{model} \u00d7 {prop['family']} / {prop['name']}: {cell['outcome']}"
    if len(cell["tests"]) > 1:
        head += f" ({len(cell['tests'])} tests: {counts})"
    return head + (f"\n{cell['reason']}" if cell["reason"] else "")


def _heatmap(report: dict) -> str:
    props, rows, cells = report["properties"], report["models"], report["cells"]
    by_property = report["totals"]["by_property"]
    families = []
    for prop in props:
        if families and families[-1][0] == prop["family"]:
            families[-1][1] += 1
        else:
            families.append([prop["family"], 1])
    out = ['<div class="scroll"><table class="heat"><thead><tr class="fam">',
           f'<th class="corner" rowspan="2">model <small>({len(rows)})</small></th>']
    out += [f'<th colspan="{n}" title="{_e(f)}">{_e(f)}</th>' for f, n in families]
    out.append(f'<th colspan="{len(OUTCOMES)}" class="tot">cells per outcome</th></tr><tr class="prop">')
    first_of_family = {props[0]["id"]} if props else set()
    for before, prop in zip(props, props[1:]):
        if prop["family"] != before["family"]:
            first_of_family.add(prop["id"])
    for prop in props:
        border = ' style="border-left:1px solid #bbb"' if prop["id"] in first_of_family else ""
        out.append(f'<th{border} title="{_e(prop["id"])}"><span>{_e(prop["name"])}</span></th>')
    out += [f'<th class="tot"><span>{_e(o)}</span></th>' for o in OUTCOMES]
    out.append("</tr></thead><tbody>")
    for rank, row in enumerate(rows):
        name = row["name"]
        counts = report["totals"]["by_model"].get(name, {})
        data = " ".join(f'data-{_key(o)}="{counts.get(o, 0)}"' for o in OUTCOMES)
        cls = row.get("model_class", "")
        label = f"{cls} \u00b7 {row.get('modality', '?')} \u00b7 {row.get('seconds', 0):.1f} s"
        if row["status"] == "not built":
            label += f"\nnot built: {row.get('reason', '')}"
        out.append(f'<tr data-name="{_e(name.lower())}" data-cls="{_e(cls.lower())}" '
                   f'data-modality="{_e(row.get("modality", ""))}" data-rank="{rank}" '
                   f'data-seconds="{row.get("seconds", 0)}" {data}>'
                   f'<th title="{_e(label)}">{_e(name)} <small>{_e(row.get("modality", ""))}</small></th>')
        for prop in props:
            fb = " fb" if prop["id"] in first_of_family else ""
            cell = cells.get(name, {}).get(prop["id"])
            if cell is None:
                out.append(f'<td class="c e{fb}" title="{_e(name)} \u00d7 {_e(prop["name"])}: no test"></td>')
            else:
                out.append(f'<td class="c {STYLE[cell["outcome"]][0]}{fb}" '
                           f'title="{_e(_cell_title(name, prop, cell))}"></td>')
        out += [f'<td class="n{"" if counts.get(o) else " z"}{" fb" if i == 0 else ""}">{counts.get(o, 0)}</td>'
                for i, o in enumerate(OUTCOMES)]
        out.append("</tr>")
    out.append("</tbody><tfoot>")
    for i, outcome in enumerate(OUTCOMES):
        bottom = (len(OUTCOMES) - 1 - i) * 16
        css = STYLE[outcome][0]
        out.append(f'<tr><th style="bottom:{bottom}px"><span class="chip {css}" style="padding:0 6px">'
                   f'{_e(outcome)}</span></th>')
        for prop in props:
            n = by_property.get(prop["id"], {}).get(outcome, 0)
            fb = " fb" if prop["id"] in first_of_family else ""
            out.append(f'<td class="{fb.strip()}" style="bottom:{bottom}px;text-align:center;padding:0!important'
                       f'{";color:#ccc" if not n else ""}" title="{_e(prop["id"])}: {n} {_e(outcome)}">{n}</td>')
        total = report["totals"]["outcomes"].get(outcome, 0)
        out.append(f'<td colspan="{len(OUTCOMES)}" style="bottom:{bottom}px">{total}</td></tr>')
    out.append("</tfoot></table></div>")
    return "".join(out)


def _controls(report: dict) -> str:
    modalities = sorted({m.get("modality", "") for m in report["models"]} - {""})
    options = "".join(f'<option value="{_e(m)}">{_e(m)}</option>' for m in modalities)
    outs = "".join(f'<option value="{_key(o)}">{_e(o)}</option>' for o in OUTCOMES)
    sorts = "".join(f'<option value="{_key(o)}">most {_e(o)}</option>' for o in OUTCOMES)
    return ('<div class="controls">'
            '<label>model or class <input id="q" type="search" placeholder="e.g. llama or ForCausalLM"></label>'
            f'<label>modality <select id="mod"><option value="">all</option>{options}</select></label>'
            f'<label>rows with <select id="out"><option value="">any outcome</option>{outs}</select></label>'
            '<label>sort <select id="sort"><option value="rank">modality, name</option>'
            f'<option value="name">name</option>{sorts}<option value="seconds">slowest</option></select></label>'
            '<span id="shown"></span></div>')


def _list_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=r" if i == len(r) - 1 else ""}>{_e(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="list"><tr>{head}</tr>{body}</table>'


def _grouped(title: str, anchor: str, groups: dict[str, list[dict]], headers: list[str], columns: list[str]) -> str:
    total = sum(len(v) for v in groups.values())
    out = [f'<h2 id="{anchor}">{_e(title)} <small>({total} in {len(groups)} groups)</small></h2>']
    if not groups:
        out.append("<p>None.</p>")
    for name, entries in groups.items():
        opened = " open" if len(entries) <= 20 else ""
        rows = [[str(e.get(c, "")) for c in columns] for e in entries]
        out.append(f"<details{opened}><summary>{_e(name)} ({len(entries)})</summary>"
                   f"{_list_table(headers, rows)}</details>")
    return "".join(out)


def _test_param(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def render_html(report: dict) -> str:
    meta, totals = report.get("meta", {}), report["totals"]
    rows, props = report["models"], report["properties"]
    chips = "cells: " + "".join(f'<span class="chip {STYLE[o][0]}">{_e(o)}: {totals["outcomes"].get(o, 0)}</span>'
                    for o in OUTCOMES)
    legend = "".join(f'<span class="sw {STYLE[o][0]}">{STYLE[o][2]}</span>{_e(o)}: {_e(MEANING[o])}'
                     for o in OUTCOMES)
    legend += f'<span class="sw" style="background:{EMPTY_COLOUR}"></span>empty: no test (not applicable or not selected)'
    facts = [f"transformers {meta.get('transformers', '?')}", f"torch {meta.get('torch', '?')}",
             f"profile {meta.get('profile', '?')}"]
    if meta.get("shard"):
        facts.append(f"shard {meta['shard']}")
    if meta.get("merged_from"):
        facts.append(f"merged from {len(meta['merged_from'])} reports")
    facts.append(f"generated {meta.get('generated', '?')}")
    facts = " \u00b7 ".join(facts)
    models = totals["models"]

    by_property = {p: [{**e, "test": _test_param(e["test"])} for e in v] for p, v in report["findings"]["by_property"].items()}
    by_component = {c: [{**e, "test": _test_param(e["test"])} for e in v] for c, v in report["findings"]["by_component"].items()}
    failed, skipped, unseen = defaultdict(list), defaultdict(list), defaultdict(list)
    for model, cells in report["cells"].items():
        for prop, cell in cells.items():
            for test in cell["tests"]:
                entry = {"model": model, "test": _test_param(test["id"]), "reason": test["reason"]}
                if test["outcome"] == "failed":
                    failed[prop].append(entry)
                elif test.get("xpassed"):
                    unseen[prop].append(entry)
                elif test["outcome"] == "skipped":
                    skipped[test["reason"] or "(no reason given)"].append(entry)
    not_built = defaultdict(list)
    for row in rows:
        if row["status"] == "not built":
            not_built[row.get("reason", "")].append(row)
    not_built_rows = [[r["name"], r.get("modality", ""), r.get("model_class", ""), reason]
                      for reason, group in sorted(not_built.items(), key=lambda kv: -len(kv[1])) for r in group]
    skipped_rows = [[str(len(v)), ", ".join(sorted({e["model"] for e in v})[:40]), reason]
                    for reason, v in sorted(skipped.items(), key=lambda kv: -len(kv[1]))]
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>hfprops coverage: {len(rows)} models \u00d7 {len(props)} properties</title>",
        f"<style>{CSS}{_style_rules()}</style></head><body>",
        f"<h1>hfprops coverage: {len(rows)} models \u00d7 {len(props)} properties</h1>",
        f"<p class=\"meta\">{_e(facts)}<br>models: {models['built']} built, "
        f"{models['not built']} not built; {totals['tests']} tests in "
        f"{sum(totals['outcomes'].values())} cells</p>",
        f"<div>{chips}</div><p class=\"legend\">{legend}</p>",
        "<nav><a href=\"#heatmap\">heatmap</a><a href=\"#by-property\">findings by property</a>"
        "<a href=\"#by-component\">findings by component</a><a href=\"#failed\">failed</a>"
        "<a href=\"#unseen\">findings that did not show</a><a href=\"#not-built\">not built</a><a href=\"#skipped\">skipped</a></nav>",
        "<h2 id=\"heatmap\">Model \u00d7 property</h2>",
        "<p class=\"meta\">Hover a cell for its tests and the reason (or the failure's first line); "
        "hover a model for its class, modality and time.</p>",
        _controls(report), _heatmap(report),
        _grouped("Findings by property", "by-property", by_property, ["model", "component", "class", "test", "reason"],
                 ["model", "component", "class", "test", "reason"]),
        _grouped("Findings by component", "by-component", by_component, ["property", "model", "class", "test", "reason"],
                 ["property", "model", "class", "test", "reason"]),
        _grouped("Failed", "failed", dict(sorted(failed.items())), ["model", "test", "first line"],
                 ["model", "test", "reason"]),
        _grouped("Recorded findings that did not show (passed; the finding is not strict here)", "unseen",
                 dict(sorted(unseen.items())), ["model", "test", "finding"], ["model", "test", "reason"]),
        f"<h2 id=\"not-built\">Not built <small>({len(not_built_rows)})</small></h2>",
        _list_table(["model", "modality", "class", "reason"], not_built_rows) if not_built_rows else "<p>None.</p>",
        f"<h2 id=\"skipped\">Skipped, by reason <small>({sum(len(v) for v in skipped.values())} tests)</small></h2>",
        _list_table(["tests", "models", "reason"], skipped_rows) if skipped_rows else "<p>None.</p>",
        f"<script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts)


def write_html(report: dict, path: Path) -> Path:
    path.write_text(render_html(report), encoding="utf-8")
    return path


def write_png(report: dict, path: Path) -> Path:
    """The heatmap alone: models down, properties across, one colour per outcome."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    props, rows = report["properties"], report["models"]
    index = {o: i for i, o in enumerate(OUTCOMES)}
    grid = [[index[report["cells"].get(r["name"], {}).get(p["id"], {}).get("outcome", "")]
             if p["id"] in report["cells"].get(r["name"], {}) else len(OUTCOMES) for p in props] for r in rows]
    colours = ListedColormap([STYLE[o][1] for o in OUTCOMES] + [EMPTY_COLOUR])
    n_rows, n_cols = max(1, len(rows)), max(1, len(props))
    label_size = 7 if n_rows <= 60 else 5 if n_rows <= 250 else 4
    row_inches = 0.16 if n_rows <= 60 else 0.1
    # The figure is the grid alone; labels, title and legend lie outside it and
    # bbox_inches="tight" grows the saved image to hold them.
    fig = plt.figure(figsize=(0.22 * n_cols, row_inches * n_rows + 0.1))
    axis = fig.add_axes((0, 0, 1, 1))
    axis.imshow(grid if props and rows else [[len(OUTCOMES)]], cmap=colours, vmin=-0.5, vmax=len(OUTCOMES) + 0.5,
                aspect="auto", interpolation="nearest")
    axis.set_xticks(range(len(props)), [f"{p['family']} / {p['name']}" for p in props], rotation=90, fontsize=7)
    axis.set_yticks(range(len(rows)), [r["name"] for r in rows], fontsize=label_size)
    axis.set_xticks([x - 0.5 for x in range(1, len(props))], minor=True)
    axis.set_yticks([y - 0.5 for y in range(1, len(rows))], minor=True)
    axis.grid(which="minor", color="white", linewidth=0.5)
    axis.tick_params(which="minor", length=0)
    axis.xaxis.tick_top()
    totals = report["totals"]["outcomes"]
    axis.legend(handles=[Patch(color=STYLE[o][1], label=f"{o} ({totals.get(o, 0)})") for o in OUTCOMES]
                + [Patch(color=EMPTY_COLOUR, label="no test")],
                loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axis.set_title(f"hfprops coverage: {len(rows)} models x {len(props)} properties", fontsize=10, loc="left")
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return path

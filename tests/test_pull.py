"""Pull by repo id: a tiny adapter trained here, pushed to the local stand-in hub (``hub_standin.py``), pulled back in
fresh processes with an empty ``HF_HOME`` through the library, the card's own snippet, ``clinical-prompt extract`` and
the extract recipe, then again with ``HF_HUB_OFFLINE=1`` on the warm cache; every prediction byte-identical to the
original folder's. Then what a pull refuses, with one error line naming the repository and the file or field.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file

import clinical_prompt
from clinical_prompt import AdapterBank, PullError, load_adapter
from clinical_prompt.brat import Document, Entity, Relation, write_document
from clinical_prompt.card import write_card
from clinical_prompt.cli import main
from clinical_prompt.evaluation import evaluate_directories
from clinical_prompt.extractors import build_extractor, load_extractor
from clinical_prompt.hub import push_to_hub
from clinical_prompt.recipes.extract import extract_to_brat
from conftest import save_tiny_bert
from hub_standin import TOKEN, HubStandIn, serving

ROOT = Path(__file__).resolve().parents[1]
BASE_REPO, REPO = "org/tiny-bert", "org/site-a"
SCHEMA = clinical_prompt.TaskSchema.from_dict({
    "name": "meds",
    "concepts": [{"name": "Drug", "query": "Which drugs?"}, {"name": "Dosage", "query": "Which doses?"}],
    "relations": [{"name": "Dosage-Drug", "head": "Drug", "tails": ["Dosage"], "query": "Dose of {head}?",
                   "head_arg": "Arg2"}],
})
TEXTS = {
    "n1": "Aspirin 81 mg daily was started.",
    "n2": "Heparin 5000 units was stopped.",
    "n3": "Metformin 500 mg twice daily.",
    "n4": "Warfarin 5 mg was held.",
}
WORDS = sorted({w.strip(".").lower() for text in TEXTS.values() for w in text.split()})
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[", "]", ".", "?", "which", "drugs", "doses", "dose", "of",
         *WORDS]
pytestmark = pytest.mark.usefixtures("one_thread")


def gold(doc_id: str) -> Document:
    """The note with its drug, its dose and their relation."""
    text = TEXTS[doc_id]
    drug_end = text.index(" ")
    dose_end = text.index(" ", text.index(" ", drug_end + 1) + 1)
    return Document(doc_id, text, entities={
        "T1": Entity("T1", "Drug", ((0, drug_end),), text[:drug_end]),
        "T2": Entity("T2", "Dosage", ((drug_end + 1, dose_end),), text[drug_end + 1:dose_end])},
        relations={"R1": Relation("R1", "Dosage-Drug", "T2", "T1")})


@pytest.fixture(scope="module")
def standin() -> Iterator[HubStandIn]:
    """One stand-in hub for the module."""
    with serving() as server:
        yield server


@pytest.fixture
def on_standin(standin, tmp_path, monkeypatch) -> HubStandIn:
    """huggingface_hub of this process pointed at the stand-in, online, with an empty cache of its own."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", standin.url)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        standin.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return standin


@pytest.fixture(scope="module")
def site(standin, one_thread, tmp_path_factory) -> dict[str, Path]:
    """A tiny base pushed as ``org/tiny-bert`` and a frozen adapter on it, trained for two epochs, carded for
    ``org/site-a`` and pushed there; the gold notes (``.txt`` and ``.ann``)."""
    from clinical_prompt.fit import fit
    from clinical_prompt.training import TrainingConfig

    root = tmp_path_factory.mktemp("site")
    base = save_tiny_bert(root / "base", VOCAB, hidden_size=32, num_attention_heads=2, max_position_embeddings=64)
    standin.commit(BASE_REPO, {p.name: p.read_bytes() for p in base.iterdir()})
    torch.manual_seed(0)
    extractor = build_extractor("soft-prompt-frozen", SCHEMA, str(base), max_length=32, threshold=0.2,
                                prompt_config=clinical_prompt.ClinicalPromptConfig(num_virtual_tokens=4, depth="deep"))
    notes = [gold(doc_id) for doc_id in TEXTS]
    fit(extractor, notes, notes[:1], TrainingConfig(output_dir=root / "run", num_epochs=2, per_device_batch_size=4,
                                             mixed_precision="no", seed=0, eval_every_epoch=False,
                                             save_every_epoch=False, load_best_at_end=False))
    adapter = root / "adapter"
    extractor.save_pretrained(adapter, base_model_id=BASE_REPO)
    write_card(adapter, license="apache-2.0", repo_id=REPO)
    push_to_hub(adapter, REPO, token=TOKEN, endpoint=standin.url)
    for note in notes:
        write_document(note, root / "gold", write_text=True)
    return {"base": base, "adapter": adapter, "gold": root / "gold"}


def snippet(card: str) -> str:
    """The python block under "How to use" in a model card."""
    return re.search(r"## How to use\n\n```python\n(.*?)```", card, re.DOTALL).group(1)


FRESH = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
import clinical_prompt
from clinical_prompt.brat import Document, format_ann
from clinical_prompt.cli import main
channel, out, notes, gold, base, repo, card = sys.argv[1:8]
out = Path(out)
texts = json.loads(Path(notes).read_text())
if channel == "library":
    extractor = clinical_prompt.from_pretrained(repo)
    adapter = clinical_prompt.load_adapter(base, repo)
    bank = clinical_prompt.AdapterBank(base)
    bank.add("site-a", repo)
    out.mkdir()
    (out / "predict.json").write_text(json.dumps(extractor.predict(list(texts.values()))))
    (out / "load_adapter.json").write_text(json.dumps(adapter.predict(list(texts.values()))))
    (out / "bank.json").write_text(json.dumps(bank.predict(list(texts.values()), "site-a")))
    from peft import PeftModel
    from transformers import AutoModel
    try:
        PeftModel.from_pretrained(AutoModel.from_pretrained(base), repo)
    except clinical_prompt.prompts.AdapterFormatError as error:
        (out / "peft.txt").write_text(str(error))
    exec(Path(card).read_text())
elif channel == "cli":
    sys.exit(main(["extract", "--base", base, "--adapter", f"site-a={repo}", "--input", gold, "--output", str(out)]))
else:
    from clinical_prompt.recipes.cli import main as recipe
    sys.exit(recipe("extract", ["--config", card, f"model_dir={repo}", f"output_dir={out}"]))
"""


def fresh(site, standin, tmp_path: Path, channel: str, hf_home: Path, out: Path, offline: bool) -> str:
    """Run ``channel`` in a new process with ``hf_home`` as its ``HF_HOME``; its stdout."""
    notes = tmp_path / "notes.json"
    notes.write_text(json.dumps(TEXTS))
    card = tmp_path / ("snippet.py" if channel == "library" else "extract.yaml")
    if channel == "library":
        card.write_text(snippet(standin.files(REPO)["README.md"].decode()))
    else:
        card.write_text(f"input: {site['gold']}\n")
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_ENDPOINT": standin.url, "HF_HUB_OFFLINE": str(int(offline)),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    env.pop("HF_TOKEN", None)
    done = subprocess.run([sys.executable, "-c", FRESH, channel, str(out), str(notes), str(site["gold"]), BASE_REPO,
                           REPO, str(card)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def expected(site, one_thread, tmp_path_factory) -> dict:
    """What the original folder predicts, loaded onto the local base folder in this process, through each channel."""
    out = tmp_path_factory.mktemp("expected")
    extractor = load_extractor(site["adapter"], backbone=str(site["base"]))
    results = extractor.predict(list(TEXTS.values()))
    assert all(result["entities"] for result in results)
    assert main(["extract", "--base", str(site["base"]), "--adapter", f"site-a={site['adapter']}",
                 "--input", str(site["gold"]), "--output", str(out / "cli")]) == 0
    extract_to_brat(site["adapter"], site["gold"], out / "recipe", backbone=str(site["base"]))
    card_results = extractor.predict(["Aspirin 81 mg was started for chest pain."])
    return {"predict": json.dumps(results), "cli": out / "cli", "recipe": out / "recipe",
            "snippet": f"{card_results[0]['entities']} {card_results[0]['relations']}\n"}


@pytest.mark.parametrize("channel", ["library", "cli", "recipe"])
def test_a_fresh_process_pulls_by_repo_id_and_predicts_as_the_original_online_then_offline(
        site, standin, expected, tmp_path, channel: str) -> None:
    hf_home = tmp_path / "hf-home"
    for offline in (False, True):
        out = tmp_path / f"out-{int(offline)}"
        stdout = fresh(site, standin, tmp_path, channel, hf_home, out, offline)
        if channel == "library":
            for name in ("predict", "load_adapter", "bank"):
                assert (out / f"{name}.json").read_text() == expected["predict"]
            assert stdout.endswith(expected["snippet"])  # the card's snippet, verbatim, ran and printed them
            assert "clinical_prompt.from_pretrained(repo_id_or_dir)" in (out / "peft.txt").read_text()
        else:
            for doc_id in TEXTS:
                assert (out / f"{doc_id}.ann").read_bytes() == (expected[channel] / f"{doc_id}.ann").read_bytes()
    cached = [p.relative_to(hf_home).as_posix() for p in hf_home.rglob("*/snapshots/*/*")]
    assert any(name.endswith("/adapter_model.safetensors") for name in cached)
    assert not [name for name in cached if "site-a" in name and name.endswith(("README.md", ".bin"))]


# --- revisions, tokens and what is downloaded -------------------------------------------------------------------


def test_a_revision_a_commit_and_a_private_repo_with_its_token(site, on_standin, tmp_path, monkeypatch) -> None:
    first = on_standin.repos[REPO]["refs"]["main"]
    edited = tmp_path / "v2"
    edited.mkdir()
    for path in site["adapter"].iterdir():
        (edited / path.name).write_bytes(path.read_bytes())
    meta = json.loads((edited / "extractor.json").read_text())
    meta["settings"]["threshold"] = 0.45
    (edited / "extractor.json").write_text(json.dumps(meta))
    push_to_hub(edited, REPO, token=TOKEN, revision="v2")
    base = str(site["base"])
    assert load_adapter(base, f"{REPO}@v2").settings.threshold == 0.45
    assert load_adapter(base, REPO, revision="v2").settings.threshold == 0.45
    assert load_adapter(base, f"{REPO}@{first}").settings.threshold == 0.2
    on_standin.commit("org/private", dict(on_standin.files(REPO)))
    on_standin.repos["org/private"]["private"] = True
    with pytest.raises(PullError, match=r"org/private: no such local folder, nor a repository org/private .*token"):
        load_adapter(base, "org/private")
    assert load_adapter(base, "org/private", token=TOKEN).settings.threshold == 0.2
    for name in ("org/private-cli", "org/private-env"):  # never pulled before: only the token opens them
        on_standin.commit(name, dict(on_standin.files(REPO)))
        on_standin.repos[name]["private"] = True
    assert main(["extract", "--base", base, "--adapter", "a=org/private-cli", "--token", TOKEN,
                 "--input", str(site["gold"]), "--output", str(tmp_path / "out")]) == 0
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    bank = AdapterBank(base)
    bank.add("private", "org/private-env")
    bank.replace("private", f"{REPO}@v2")
    assert bank["private"].settings.threshold == 0.45


def test_only_the_saved_layout_is_downloaded(site, on_standin) -> None:
    files = dict(on_standin.files(REPO))
    on_standin.commit("org/with-extras", {**files, "notes.txt": b"not part of an extractor",
                                          "pytorch_model.bin": b"\x80\x04N.", "backbone/pytorch_model.bin": b"x"})
    extractor = load_adapter(str(site["base"]), "org/with-extras")
    snapshot = Path(huggingface_hub.constants.HF_HUB_CACHE)
    names = sorted(p.name for p in snapshot.rglob("snapshots/*/*"))
    assert names == ["adapter_config.json", "adapter_model.safetensors", "extractor.json", "labels.json", "schema.json"]
    assert extractor.schema.name == "meds"


# --- refusals: one line naming the repository and the file or field, exit 2, nothing written -------------------


def tampered(files: dict[str, bytes], name: str) -> dict[str, bytes]:
    """``files`` with the prompt tables of ``adapter_model.safetensors`` one block short, saved again."""
    path = Path(name)
    path.write_bytes(files["adapter_model.safetensors"])
    tensors = load_file(path)
    save_file({**tensors, "prompt_tables": tensors["prompt_tables"][:2].clone()}, path)
    return {**files, "adapter_model.safetensors": path.read_bytes()}


REFUSALS = {
    "unknown-repo": ("org/nope", r"org/nope: no such local folder, nor a repository org/nope at http"),
    "missing-revision": (f"{REPO}@v9", rf"{REPO}@v9: repository {REPO} at http\S+ has no revision 'v9'"),
    "missing-layout-file": ("org/no-labels", r"org/no-labels/labels\.json: missing"),
    "truncated-safetensors": ("org/truncated", r"org/truncated/adapter_model\.safetensors: not a complete safetensors"),
    "tampered-safetensors": ("org/tampered", r"org/tampered/adapter_model\.safetensors: tensor 'prompt_tables' has "
                                             r"shape \[2, "),
    "pickle-only": ("org/pickled", r"org/pickled/adapter_model\.safetensors: missing; .* never from pickles"),
    "link-out-of-the-cache": (REPO, rf"{REPO}/adapter_model\.safetensors: leads outside {REPO}; "),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_bad_pull_is_one_error_line_exit_2_and_nothing_written(site, on_standin, tmp_path, capsys,
                                                                 case: str) -> None:
    files = dict(on_standin.files(REPO))
    weights = files.pop("adapter_model.safetensors")
    on_standin.commit("org/no-labels", {k: v for k, v in {**files, "adapter_model.safetensors": weights}.items()
                                        if k != "labels.json"})
    on_standin.commit("org/truncated", {**files, "adapter_model.safetensors": weights[: len(weights) // 2]})
    on_standin.commit("org/tampered", tampered({**files, "adapter_model.safetensors": weights},
                                               str(tmp_path / "t.safetensors")))
    on_standin.commit("org/pickled", {**files, "adapter_model.bin": b"\x80\x04N."})
    name, message = REFUSALS[case]
    if case == "link-out-of-the-cache":
        load_adapter(str(site["base"]), REPO)  # a warm cache, then one of its links redirected out of it
        link = next(Path(huggingface_hub.constants.HF_HUB_CACHE).rglob("snapshots/*/adapter_model.safetensors"))
        outside = tmp_path / "outside.safetensors"
        outside.write_bytes(weights)
        link.unlink()
        link.symlink_to(outside)
    out = tmp_path / "predictions"
    status = main(["extract", "--base", str(site["base"]), "--adapter", f"a={name}", "--input", str(site["gold"]),
                   "--output", str(out)])
    lines = [line for line in capsys.readouterr().err.split("\n") if line and "\r" not in line]  # not progress bars
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("clinical-prompt: error: "), lines
    err = lines[0]
    assert re.search(message, err), err
    assert str(huggingface_hub.constants.HF_HUB_CACHE) not in err
    assert not out.exists()
    cache = Path(huggingface_hub.constants.HF_HUB_CACHE)
    assert not list(cache.rglob("*.incomplete")) and not list(cache.rglob("*.bin"))


def test_a_folder_that_is_neither_is_named(site, tmp_path, capsys) -> None:
    with pytest.raises(PullError, match=r"a/b/c: no such folder, and not a hub repo id ORG/NAME\[@REVISION\]"):
        load_extractor("a/b/c")
    with pytest.raises(PullError, match=r"a local folder has no revision"):
        load_extractor(site["adapter"], revision="v1")


# --- extract then evaluate ---------------------------------------------------------------------------------------


def test_extract_output_is_scored_by_evaluate_as_it_is(site, tmp_path, capsys) -> None:
    out = tmp_path / "predictions"
    assert main(["extract", "--base", str(site["base"]), "--adapter", f"a={site['adapter']}",
                 "--input", str(site["gold"]), "--output", str(out)]) == 0
    assert sorted(p.suffix for p in out.iterdir()) == [".ann"] * len(TEXTS)
    capsys.readouterr()
    assert main(["evaluate", "--gold", str(site["gold"]), "--pred", str(out), "--json", str(tmp_path / "m.json")]) == 0
    assert "strict" in capsys.readouterr().out
    scores = json.loads((tmp_path / "m.json").read_text())
    assert scores["documents"] == {"gold": 4, "pred": 4, "scored": 4, "missing": "skip", "missing_pred": [],
                                   "missing_gold": []}
    predicted = load_extractor(site["adapter"], backbone=str(site["base"])).extract(
        [Document(i, t) for i, t in TEXTS.items()])
    for document in predicted:
        write_document(document, tmp_path / "with-text", write_text=True)
    assert scores == evaluate_directories(site["gold"], tmp_path / "with-text")


# --- the downstream API ------------------------------------------------------------------------------------------


def test_predict_gives_types_offsets_and_scores_for_one_adapter_and_a_bank(site, tmp_path) -> None:
    other = tmp_path / "other"
    torch.manual_seed(1)
    build_extractor("soft-prompt-frozen", SCHEMA, str(site["base"]), max_length=32, threshold=0.3,
                    prompt_config=clinical_prompt.ClinicalPromptConfig(num_virtual_tokens=2, depth="input"),
                    ).save_pretrained(other)
    notes = list(TEXTS.values())
    alone = {name: load_adapter(str(site["base"]), folder).predict(notes)
             for name, folder in (("a", site["adapter"]), ("b", other))}
    bank = AdapterBank(str(site["base"]))
    bank.add("a", site["adapter"])
    bank.add("b", other)
    mixed = bank.predict(notes, ["a", "b", "a", "b"])
    for result, own in zip(mixed, [alone[name][i] for i, name in enumerate(["a", "b", "a", "b"])]):
        for kind in ("entities", "relations"):  # mixed batches equal each adapter alone up to float rounding
            assert [{**item, "score": None} for item in result[kind]] == [{**item, "score": None} for item in own[kind]]
            assert [item["score"] for item in result[kind]] == pytest.approx([item["score"] for item in own[kind]])
    for note, result in zip(notes, alone["a"]):
        ids = {entity["id"] for entity in result["entities"]}
        for entity in result["entities"]:
            assert entity["type"] in ("Drug", "Dosage") and note[entity["start"]:entity["end"]] == entity["text"]
            assert 0.2 < entity["score"] <= 1.0
        for relation in result["relations"]:
            assert relation["type"] == "Dosage-Drug" and {relation["arg1"], relation["arg2"]} <= ids
            assert 0.2 < relation["score"] <= 1.0
    with pytest.raises(TypeError, match="list of note strings"):
        bank["a"].predict(notes[0])


# --- honest metadata ---------------------------------------------------------------------------------------------


def test_minilm_is_recorded_by_its_hub_id_and_served_offline_by_the_bundled_copy(minilm_path, tmp_path,
                                                                                monkeypatch) -> None:
    from clinical_prompt.backbone import resolve_backbone

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    build_extractor("soft-prompt-frozen", SCHEMA, "minilm", max_length=32, threshold=0.45,
                    prompt_config=clinical_prompt.ClinicalPromptConfig(num_virtual_tokens=2, depth="input"),
                    ).save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "extractor.json").read_text())
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    hub_id = "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["backbone"] == config["base_model_name_or_path"] == hub_id
    assert config["task_type"] == "TOKEN_CLS"
    assert resolve_backbone(hub_id) == resolve_backbone("minilm") == str(minilm_path)
    predicted = load_extractor(tmp_path).predict(list(TEXTS.values()))
    meta["backbone"] = config["base_model_name_or_path"] = "minilm"  # as saved before hub ids were recorded
    (tmp_path / "extractor.json").write_text(json.dumps(meta))
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    assert load_extractor(tmp_path).predict(list(TEXTS.values())) == predicted

"""provenance: digests of code, data and settings, checked against hashlib by hand."""

from __future__ import annotations

import hashlib
import json

import pytest

from talkhead_models.provenance import inputs_digest, tree_digest


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


A, B = b"x = 1\n", b"hello"
A_SHA, B_SHA = hashlib.sha256(A).hexdigest(), hashlib.sha256(B).hexdigest()
CLIP = bytes(range(256)) * 10_000   # 2.56 MB: more than two 1 MiB chunks


def _tree(root):
    """src/a.py, src/pkg/b.txt (nested), and data/clip.bin; returns the root."""
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "src" / "a.py").write_bytes(A)
    (root / "src" / "pkg" / "b.txt").write_bytes(B)
    (root / "data" / "clip.bin").write_bytes(CLIP)
    return root


def test_tree_digest_is_the_sorted_list_of_relative_paths_and_content_digests(tmp_path):
    root = _tree(tmp_path)
    listing = (f"src/a.py\0{A_SHA}\n" + f"src/pkg/b.txt\0{B_SHA}\n").encode()
    assert tree_digest([root / "src"], root) == _sha(listing)
    # without a root the paths are relative to the folder given
    listing = (f"a.py\0{A_SHA}\n" + f"pkg/b.txt\0{B_SHA}\n").encode()
    assert tree_digest([root / "src"]) == _sha(listing)
    assert tree_digest([root / "src" / "pkg" / "b.txt"]) == _sha(f"b.txt\0{B_SHA}\n".encode())


def test_inputs_digest_combines_code_data_and_settings_by_hand(tmp_path):
    root = _tree(tmp_path)
    code = _sha((f"src/a.py\0{A_SHA}\n" + f"src/pkg/b.txt\0{B_SHA}\n").encode())
    data = _sha(f"clip.bin\0{_sha(CLIP)}\n".encode())
    settings = {"iterations": 600, "lr": 0.01, "path": root / "data"}
    expected = _sha(f"code\0{code}\ndata\0corpus\0{data}\nsettings\0".encode()
                    + json.dumps({"iterations": 600, "lr": 0.01, "path": str(root / "data")}, sort_keys=True).encode())
    assert inputs_digest([root / "src"], {"corpus": root / "data"}, settings, root) == expected
    reordered = {"path": root / "data", "lr": 0.01, "iterations": 600}
    assert inputs_digest([root / "src"], {"corpus": root / "data"}, reordered, root) == expected


def test_data_outside_the_code_root_hashes_like_the_same_data_inside_it(tmp_path):
    root = _tree(tmp_path / "repository")
    elsewhere = tmp_path / "mounted" / "data"
    elsewhere.parent.mkdir()
    (root / "data").rename(elsewhere)
    moved = inputs_digest([root / "src"], {"corpus": elsewhere}, {}, root)
    elsewhere.rename(root / "data")
    assert inputs_digest([root / "src"], {"corpus": root / "data"}, {}, root) == moved
    assert inputs_digest([root / "src"], {"other_name": root / "data"}, {}, root) != moved


def test_order_of_the_paths_and_overlaps_do_not_matter(tmp_path):
    root = _tree(tmp_path)
    one = tree_digest([root / "src", root / "data"], root)
    assert tree_digest([root / "data", root / "src"], root) == one
    assert tree_digest([root / "data", root / "src" / "a.py", root / "src"], root) == one   # a.py counted once


def test_a_changed_byte_a_renamed_file_or_a_changed_setting_changes_the_digest(tmp_path):
    root = _tree(tmp_path)

    def digest(settings=None):
        return inputs_digest([root / "src"], {"corpus": root / "data"}, settings or {"iterations": 600}, root)

    before = digest()
    clip = root / "data" / "clip.bin"
    content = bytearray(clip.read_bytes())
    content[500] ^= 1
    clip.write_bytes(bytes(content))
    changed_byte = digest()
    (root / "src" / "pkg" / "b.txt").rename(root / "src" / "pkg" / "c.txt")
    renamed = digest()
    setting = digest({"iterations": 601})
    assert len({before, changed_byte, renamed, setting}) == 4
    # a file moved from the code into the data changes the digest too
    (root / "src" / "a.py").rename(root / "data" / "a.py")
    assert digest() != renamed


def test_pycache_and_pyc_files_are_ignored(tmp_path):
    root = _tree(tmp_path)
    before = tree_digest([root / "src"], root)
    (root / "src" / "__pycache__").mkdir()
    (root / "src" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\x00compiled")
    (root / "src" / "pkg" / "stray.pyc").write_bytes(b"\x00compiled")
    assert tree_digest([root / "src"], root) == before


def test_symlinks_are_followed(tmp_path):
    root = _tree(tmp_path)
    (root / "src" / "link.txt").symlink_to(root / "src" / "pkg" / "b.txt")
    listing = (f"src/a.py\0{A_SHA}\n" + f"src/link.txt\0{B_SHA}\n"
               + f"src/pkg/b.txt\0{B_SHA}\n").encode()
    assert tree_digest([root / "src"], root) == _sha(listing)
    (root / "src" / "loop").symlink_to(root / "src")   # a link back up the tree is not walked forever
    assert len(tree_digest([root / "src"], root)) == 64


def test_a_missing_path_is_named(tmp_path):
    root = _tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="absent_folder"):
        tree_digest([root / "src", root / "absent_folder"], root)
    with pytest.raises(FileNotFoundError, match="gone.bin"):
        inputs_digest([root / "src"], {"corpus": root / "data" / "gone.bin"}, {}, root)
    (root / "data" / "dangling").symlink_to(root / "nowhere")
    with pytest.raises(FileNotFoundError, match="dangling"):
        tree_digest([root / "data"], root)


def test_a_data_input_counts_without_its_stages_run_reports(tmp_path):
    """A rebuilt stage writes the same outputs and another ``seconds`` in its manifest: the digest is the same;
    a changed output changes it."""
    root = _tree(tmp_path)
    (root / "data" / "manifest.json").write_text(json.dumps({"seconds": 1.5}))
    (root / "data" / "report.json").write_text(json.dumps({"frames_per_second": 900.0}))
    first = inputs_digest([root / "src"], {"corpus": root / "data"}, {}, root)
    (root / "data" / "manifest.json").write_text(json.dumps({"seconds": 2.25}))
    (root / "data" / "report.json").write_text(json.dumps({"frames_per_second": 812.5}))
    assert inputs_digest([root / "src"], {"corpus": root / "data"}, {}, root) == first
    # by hand: the data listing holds clip.bin alone
    data = _sha(f"clip.bin\0{_sha(CLIP)}\n".encode())
    code = _sha((f"src/a.py\0{A_SHA}\n" + f"src/pkg/b.txt\0{B_SHA}\n").encode())
    assert first == _sha(f"code\0{code}\ndata\0corpus\0{data}\nsettings\0{{}}".encode())
    (root / "data" / "clip.bin").write_bytes(CLIP + b"\0")
    assert inputs_digest([root / "src"], {"corpus": root / "data"}, {}, root) != first

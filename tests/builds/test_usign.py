"""usign signatures of sha256sums, checked against a folder of trusted keys."""

from pathlib import Path

import pytest

from asuproject.lib import usign
from tests.fixtures import usign as signer

KEYS = Path(__file__).resolve().parent.parent / "fixtures" / "keys"
MESSAGE = b"4e47c644057f9e7b62d14c89cbb505549644819f307bd950d60cb773a7e2098a *ib.tar.zst\n"


def test_it_accepts_a_signature_by_a_trusted_key():
    signature = signer.sign(MESSAGE, KEYS / "test-key.sec")
    fingerprint = usign.verify(MESSAGE, signature, KEYS / "trusted")
    assert fingerprint == "a13b2d2e4dd6ca64"


def test_it_rejects_a_signature_by_a_key_that_is_not_trusted():
    signature = signer.sign(MESSAGE, KEYS / "other-key.sec")
    with pytest.raises(usign.SignatureError, match="not trusted"):
        usign.verify(MESSAGE, signature, KEYS / "trusted")


def test_it_rejects_a_signature_of_other_data():
    signature = signer.sign(MESSAGE, KEYS / "test-key.sec")
    with pytest.raises(usign.SignatureError, match="does not match"):
        usign.verify(MESSAGE.replace(b"4e47", b"0000"), signature, KEYS / "trusted")


def test_it_rejects_a_damaged_signature():
    signature = signer.sign(MESSAGE, KEYS / "test-key.sec")
    comment, line = signature.splitlines()
    damaged = line[:20] + ("A" if line[20] != "A" else "B") + line[21:]
    with pytest.raises(usign.SignatureError):
        usign.verify(MESSAGE, f"{comment}\n{damaged}\n", KEYS / "trusted")


def test_it_rejects_text_that_is_not_a_signature():
    with pytest.raises(usign.SignatureError, match="not a usign signature"):
        usign.verify(MESSAGE, "<html>404 Not Found</html>", KEYS / "trusted")


def test_it_reads_the_fingerprint_of_a_real_openwrt_key():
    key = usign.read_public_key("RWR//HUXxMwMVnx7fESOKO7x8XoW4/dRidJPjt91hAAU2L59mYvHy0Fa")
    assert key.fingerprint == "7ffc7517c4cc0c56"
    assert len(key.key) == 32


def test_it_skips_files_in_the_keys_folder_that_are_not_keys(tmp_path):
    secret, public = signer.generate("test")
    (tmp_path / "README").write_text("These are the keys we trust.\n")
    (tmp_path / "key").write_text(public)
    signature = signer.sign(MESSAGE, _write(tmp_path.parent / "secret", secret))

    assert set(usign.load_keys(tmp_path)) == {signer.fingerprint(public)}
    assert usign.verify(MESSAGE, signature, tmp_path) == signer.fingerprint(public)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path

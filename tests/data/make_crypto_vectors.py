#!/usr/bin/env python3
"""Writes tests/data/crypto-vectors.json: known answers for src/crypto, computed
with implementations independent of the Rust code.

- AES-256-CBC with PKCS#7 padding and SM4-GCM (16-byte tag, no associated data):
  `cryptography` (OpenSSL). The SM4 block cipher is also checked against gmssl's
  pure-Python SM4 on the first GCM counter block.
- RSA PKCS#1 v1.5 key wrapping: `cryptography`, with a fixed RSA-1024 test key
  built from the two primes below.
- SM2 key wrapping in C1||C3||C2 order: `gmssl` (pure Python), with a fixed test
  private key. gmssl omits the 0x04 point-format byte; we add it, as Tencent's
  wire form has it.

The symmetric vectors and the SM2 ciphertexts are deterministic (gmssl draws its
ephemeral scalar from Python's `random`, seeded here); the RSA ciphertexts use
OpenSSL's random padding, so they change on every run while staying valid.

Run (from the repository root):
    python3 -m venv /tmp/cryptovenv
    /tmp/cryptovenv/bin/pip install cryptography gmssl
    /tmp/cryptovenv/bin/python tests/data/make_crypto_vectors.py
"""

import base64
import json
import pathlib
import random
from importlib.metadata import version

from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from gmssl import sm2, sm3, sm4

OUT = pathlib.Path(__file__).with_name("crypto-vectors.json")

# Test-only key material. Never used outside the tests.
RSA_P = int(
    "ef2cb47ea0d2e75f3add62cfc0a73f143cbb5800377e83969768d967df67a8da"
    "d6a38dfb14c7730e95728d10fd96981d4dbdf03c10d5fea6c966255b9c2975fd",
    16,
)
RSA_Q = int(
    "cc0b19c4ce4788c0c819ebe550f347ef4d1510242abf995248cf82ab2805119a"
    "a1441ee45f480694cf0e88fbda4ff3a486c48cc31f5b9d9a3b212e1036e4e5f7",
    16,
)
RSA_E = 65537
SM2_PRIVATE_HEX = "ecf2134c68f8bdfbcd9c02daf2c1983b5d439a6dd01f817f8f12284481e57910"

# A CheckIdCardInformation answer body as Tencent would encrypt it
# (IsEncryptResponse). The identity is the national standard's sample number.
RESPONSE_JSON = json.dumps(
    {
        "Sim": "100.00",
        "Result": "Success",
        "Description": "成功",
        "Name": "张三",
        "Sex": "男",
        "Nation": "汉",
        "Birth": "1949/12/31",
        "Address": "北京市朝阳区某某路1号",
        "IdNum": "11010519491231002X",
        "Portrait": "",
        "Warnings": "",
        "Quality": 88,
    },
    ensure_ascii=False,
    separators=(",", ":"),
).encode("utf-8")

PLAINTEXTS = [
    ("empty", b""),
    ("short field value", "张三".encode("utf-8")),
    ("exactly one block", b"0123456789abcdef"),
    ("response json, utf-8 with chinese, multi-block", RESPONSE_JSON),
    ("binary, all byte values", bytes(range(256))),
]

AES_KEYS = [
    "Tk3v9QmZ2pLx7RbN8cWy4HsJ6dFg1AeU",
    "a0B1c2D3e4F5g6H7i8J9k0L1m2N3o4P5",
]
SM4_KEYS = ["q7Wm3Zk9Xp2Lr8Vt", "ZZZZ0000aaaa9999"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def iv_for(index: int, size: int) -> bytes:
    # Fixed, distinct, not all-zero IVs.
    return bytes((17 * index + 3 * i + 1) & 0xFF for i in range(size))


def aes_256_cbc(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES256(key), modes.CBC(iv)).encryptor()
    return enc.update(padded) + enc.finalize()


def sm4_gcm(key: bytes, iv: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    enc = Cipher(algorithms.SM4(key), modes.GCM(iv)).encryptor()
    ciphertext = enc.update(plaintext) + enc.finalize()
    return ciphertext, enc.tag


def check_sm4_with_gmssl(key: bytes, iv: bytes, plaintext: bytes, ciphertext: bytes) -> None:
    """GCM's first data block is P1 xor SM4(K, IV || 00000002); recompute it
    with gmssl's independent SM4."""
    if not plaintext:
        return
    block = sm4.CryptSM4()
    block.set_key(key, sm4.SM4_ENCRYPT)
    counter = iv + (2).to_bytes(4, "big")
    keystream = bytes(block.one_round(block.sk, list(counter)))
    n = min(16, len(plaintext))
    expected = bytes(p ^ k for p, k in zip(plaintext[:n], keystream[:n]))
    assert ciphertext[:n] == expected, "cryptography and gmssl disagree on SM4"


def readable(plaintext: bytes) -> dict:
    """The plaintext as text too, when it is UTF-8, for the reader's sake."""
    try:
        return {"plaintext_utf8": plaintext.decode("utf-8")}
    except UnicodeDecodeError:
        return {}


def symmetric_vectors():
    aes, gcm = [], []
    index = 0
    for key_index, (aes_key, sm4_key) in enumerate(zip(AES_KEYS, SM4_KEYS)):
        for name, plaintext in PLAINTEXTS:
            # Every plaintext with the first key; two with the second.
            if key_index == 1 and name not in ("empty", "response json, utf-8 with chinese, multi-block"):
                continue
            index += 1
            iv16 = iv_for(index, 16)
            aes.append(
                {
                    "name": f"{name} (key {key_index + 1})",
                    "key": aes_key,
                    "iv_b64": b64(iv16),
                    "plaintext_hex": plaintext.hex(),
                    **readable(plaintext),
                    "ciphertext_b64": b64(aes_256_cbc(aes_key.encode("ascii"), iv16, plaintext)),
                }
            )
            iv12 = iv_for(index, 12)
            ciphertext, tag = sm4_gcm(sm4_key.encode("ascii"), iv12, plaintext)
            check_sm4_with_gmssl(sm4_key.encode("ascii"), iv12, plaintext, ciphertext)
            gcm.append(
                {
                    "name": f"{name} (key {key_index + 1})",
                    "key": sm4_key,
                    "iv_b64": b64(iv12),
                    "plaintext_hex": plaintext.hex(),
                    **readable(plaintext),
                    "ciphertext_b64": b64(ciphertext),
                    "tag_b64": b64(tag),
                }
            )
    return aes, gcm


def rsa_vectors():
    p, q, e = RSA_P, RSA_Q, RSA_E
    n = p * q
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    )
    private = numbers.private_key()
    public = private.public_key()
    assert private.key_size == 1024
    wrapped = []
    for key in AES_KEYS + ["0123456789ABCDEFGHIJKLMNOPQRSTUV"]:
        blob = public.encrypt(key.encode("ascii"), asym_padding.PKCS1v15())
        assert len(blob) == 128
        assert private.decrypt(blob, asym_padding.PKCS1v15()) == key.encode("ascii")
        wrapped.append({"key": key, "wrapped_b64": b64(blob)})
    return {
        "private_pkcs8_pem": private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
        "private_pkcs1_pem": private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode("ascii"),
        "public_pkcs1_pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        ).decode("ascii"),
        "public_spki_pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii"),
        "wrapped": wrapped,
    }


def pem(label: str, der: bytes) -> str:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def sm2_vectors():
    random.seed(20240917)  # gmssl's ephemeral scalar comes from `random`
    helper = sm2.CryptSM2(private_key=SM2_PRIVATE_HEX, public_key="", mode=1)
    public_hex = helper._kg(int(SM2_PRIVATE_HEX, 16), sm2.default_ecc_table["g"])
    # Pass the bare X||Y: gmssl's own handling of a leading "04" strips too much.
    cipher = sm2.CryptSM2(private_key=SM2_PRIVATE_HEX, public_key=public_hex, mode=1)
    point = bytes.fromhex("04" + public_hex)
    # SubjectPublicKeyInfo { id-ecPublicKey, sm2p256v1 (1.2.156.10197.1.301) }, BIT STRING point
    spki_prefix = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")
    wrapped = []
    for key in SM4_KEYS + ["0123456789abcdef"]:
        body = cipher.encrypt(key.encode("ascii"))  # C1 (X||Y) || C3 || C2
        assert len(body) == 64 + 32 + 16
        blob = b"\x04" + body
        # gmssl's decrypt does not check C3, so check it here.
        x2y2 = cipher._kg(int(SM2_PRIVATE_HEX, 16), body[:64].hex())
        c3 = sm3.sm3_hash(list(bytes.fromhex(x2y2[:64]) + key.encode("ascii") + bytes.fromhex(x2y2[64:])))
        assert body[64:96].hex() == c3
        assert cipher.decrypt(body) == key.encode("ascii")
        wrapped.append({"key": key, "wrapped_b64": b64(blob)})
    return {
        "private_hex": SM2_PRIVATE_HEX,
        "public_point_hex": point.hex(),
        "public_spki_pem": pem("PUBLIC KEY", spki_prefix + point),
        "wrapped": wrapped,
    }


def main() -> None:
    aes, gcm = symmetric_vectors()
    document = {
        "generator": "tests/data/make_crypto_vectors.py",
        "libraries": {"cryptography": version("cryptography"), "gmssl": version("gmssl")},
        "aes_256_cbc": aes,
        "sm4_gcm": gcm,
        "rsa_pkcs1v15": rsa_vectors(),
        "sm2_c1c3c2": sm2_vectors(),
    }
    OUT.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

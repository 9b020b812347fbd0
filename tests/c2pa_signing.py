"""Test helper: a throwaway ES256 certificate chain and C2PA signing of small seeded images.

The chain is root CA -> (optional) intermediate CA -> end-entity signing certificate, made with ``cryptography``
from seeded private scalars, so the keys and certificates are the same on every run (the ECDSA signatures inside the
certificates and the manifest still use random nonces). The end-entity certificate carries what the C2PA SDK
requires of a claim signer: X.509 v3, not self-signed, critical digitalSignature key usage, an
emailProtection/documentSigning extended key usage (no anyExtendedKeyUsage), subject/authority key identifiers.
Nothing here touches the network; signing never uses a time-stamp authority.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

__all__ = ["TestChain", "make_chain", "make_image", "sign_image", "manifest_definition", "IPTC"]

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
_DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
_NOT_BEFORE = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
_NOT_AFTER = dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class TestChain:
    """PEM texts of a signing chain; ``chain_pem`` is end-entity first, then the intermediates (no root)."""

    __test__ = False  # not a pytest test class

    root_pem: str
    chain_pem: str
    key_pem: str
    signer_cn: str
    signer_org: str
    issuer_cn: str

    def write_root(self, path: Path) -> Path:
        path.write_text(self.root_pem)
        return path


def _key(seed: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big") % (2**255) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _serial(seed: str) -> int:
    return int.from_bytes(hashlib.sha256(b"serial" + seed.encode()).digest()[:16], "big") >> 1


def _ca_cert(name: x509.Name, key, issuer: x509.Name, issuer_key, seed: str, path_len: int | None):
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
               .serial_number(_serial(seed)).not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf_cert(name: x509.Name, key, issuer: x509.Name, issuer_key, seed: str, ocsp_url: str | None):
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
               .serial_number(_serial(seed)).not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, _DOCUMENT_SIGNING]),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if ocsp_url:  # a certificate that points at revocation services (a reader must not go and ask them)
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)),
            x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(ocsp_url + "/ca.crt"))]), critical=False)
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(ocsp_url + "/ca.crl")], None, None, None)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def make_chain(seed: str = "gcage-test", intermediate: bool = True, signer_cn: str = "TestGen Signer",
               signer_org: str = "TestGen Labs", ocsp_url: str | None = None) -> TestChain:
    """A deterministic root -> [intermediate ->] end-entity chain (keys derived from ``seed``); ``ocsp_url``
    adds OCSP / CA-issuer / CRL addresses to the end-entity certificate."""
    root_key = _key(seed + "/root")
    root_name = _name(f"{seed} Root CA", "gcage test PKI")
    root = _ca_cert(root_name, root_key, root_name, root_key, seed + "/root", None)
    issuer_key, issuer_name, chain = root_key, root_name, []
    if intermediate:
        ica_key = _key(seed + "/ica")
        ica_name = _name(f"{seed} Intermediate CA", "gcage test PKI")
        chain.append(_ca_cert(ica_name, ica_key, root_name, root_key, seed + "/ica", 0))
        issuer_key, issuer_name = ica_key, ica_name
    leaf_key = _key(seed + "/leaf")
    leaf = _leaf_cert(_name(signer_cn, signer_org), leaf_key, issuer_name, issuer_key, seed + "/leaf",
                      ocsp_url)
    key_pem = leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode("ascii")
    issuer_cn = issuer_name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return TestChain(root_pem=_pem(root), chain_pem=_pem(leaf) + "".join(_pem(c) for c in chain), key_pem=key_pem,
                     signer_cn=signer_cn, signer_org=signer_org, issuer_cn=str(issuer_cn))


def make_image(fmt: str, seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small RGB image of seeded noise, encoded by Pillow as ``fmt`` ("JPEG", "PNG", "WEBP", ...)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    kwargs = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(pixels, "RGB").save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def manifest_definition(source_type: str | None = "trainedAlgorithmicMedia", action: str = "c2pa.created",
                        generator: tuple[str, str] = ("TestGen", "1.0"), title: str = "test image",
                        extra_assertions: list[dict] | None = None) -> dict:
    """A manifest definition with one actions assertion (``action`` with ``source_type`` when given)."""
    act: dict = {"action": action}
    if source_type is not None:
        act["digitalSourceType"] = IPTC + source_type
    return {
        "claim_generator_info": [{"name": generator[0], "version": generator[1]}],
        "title": title,
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [act]}}] + list(extra_assertions or []),
    }


_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff", "GIF": "image/gif"}


def sign_image(image: bytes, fmt: str, chain: TestChain, definition: dict | None = None,
               ingredients: list[tuple[dict, bytes, str]] = (), remote_url: str | None = None) -> bytes:
    """``image`` with an embedded C2PA manifest signed by ``chain``'s end-entity key (ES256, no time-stamp).

    ``ingredients``: (ingredient definition, bytes, format) added to the manifest; ``remote_url``: do not embed
    the manifest, only reference it there (XMP dcterms:provenance)."""
    import c2pa

    definition = definition if definition is not None else manifest_definition()
    settings = {"version": 1, "builder": {"thumbnail": {"enabled": False}},
                "verify": {"verify_after_sign": False, "remote_manifest_fetch": False, "ocsp_fetch": False}}
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain.chain_pem.encode(), chain.key_pem.encode(), None)
    with c2pa.Context.from_dict(settings) as ctx, c2pa.Signer.from_info(info) as signer, \
            c2pa.Builder(json.dumps(definition), context=ctx) as builder:
        for ingredient, data, ingredient_fmt in ingredients:
            builder.add_ingredient(json.dumps(ingredient), _MIME[ingredient_fmt], io.BytesIO(data))
        if remote_url:
            builder.set_no_embed()
            builder.set_remote_url(remote_url)
        out = io.BytesIO()
        builder.sign(signer, _MIME[fmt], io.BytesIO(image), out)
        return out.getvalue()

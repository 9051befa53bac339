"""Throwaway certificates for the Python TLS tests, made by the openssl CLI."""

import subprocess


def openssl(*args):
    subprocess.run(["openssl", *map(str, args)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def make_ca(directory, name):
    """A self-signed CA (P-256) valid for two days: (key path, certificate path)."""
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return key, cert


def make_leaf(directory, name, ca, serial, san=None, usage="serverAuth"):
    """A certificate signed by `ca` for `usage` (serverAuth, clientAuth or both, comma
    separated), with subjectAltName `san` (e.g. "IP:127.0.0.1,DNS:localhost") when given."""
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    ext = directory / f"{name}.ext"
    ext.write_text((f"subjectAltName={san}\n" if san else "") + f"extendedKeyUsage={usage}\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-set_serial", str(serial),
            "-days", "2", "-out", cert, "-extfile", ext)
    return key, cert

"""Provenance evidence read from a file's bytes: C2PA manifests, IPTC/XMP DigitalSourceType, declared generators in
metadata and (opt-in) invisible watermarks. Runs in the decode workers; docs/PROVENANCE.md explains the signals."""

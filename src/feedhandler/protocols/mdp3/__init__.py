"""CME MDP 3.0 (SBE over UDP): native decoder, schema loader and pure-Python SBE codec, synth.

- ``Mdp3Decoder`` (native, ``_decoder.pyx``): UDP payloads -> tick records (mbp_update, mbo, trade,
  statistic, security_status, instrument_def, gap) with channel/RptSeq sequencing and counters.
- ``schema``: load CME ``templates_FixBinary.xml`` files; encode/decode SBE messages in Python
  (reference and test-packet builder). ``tools/gen_mdp3.py`` generates the native tables from it.
- ``synth.generate(path, messages=N, seed=S)``: a synthetic MDP 3.0 pcap.
"""
from feedhandler.protocols.mdp3._decoder import (  # noqa: F401
    COUNTER_NAMES,
    REJECT_COUNTERS,
    Mdp3Decoder,
    schema_versions,
    template_name,
)
from feedhandler.protocols.mdp3.schema import (  # noqa: F401
    Schema,
    decode_message,
    encode_message,
    encode_packet,
    load_schema,
    load_schemas,
)

__all__ = [
    "COUNTER_NAMES", "REJECT_COUNTERS", "Mdp3Decoder", "schema_versions", "template_name",
    "Schema", "decode_message", "encode_message", "encode_packet", "load_schema", "load_schemas",
]

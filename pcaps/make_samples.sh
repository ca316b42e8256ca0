#!/bin/sh
# Regenerate the sample captures of this folder with `feedhandler synth` (deterministic: the same
# seed gives the same bytes). Both files hold the same synthetic NASDAQ TotalView-ITCH 5.0 day
# (20,000 messages, 25 symbols, trading day 2024-03-15):
#   itch50_sample.pcap    MoldUDP64 over Ethernet/IPv4/UDP multicast, nanosecond pcap
#   itch50_sample.bin.gz  the same messages as a gzip-compressed NASDAQ BinaryFILE
# Usage: pcaps/make_samples.sh [feedhandler executable]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
fh=${1:-feedhandler}
common="--messages 20000 --symbols 25 --seed 20240315 --date 2024-03-15"
"$fh" synth "$here/itch50_sample.pcap" $common --format pcap
"$fh" synth "$here/itch50_sample.bin.gz" $common --format binaryfile --gzip

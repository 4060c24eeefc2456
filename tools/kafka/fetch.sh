#!/usr/bin/env bash
# Fetches the Kafka broker jars (tools/kafka/pom.xml) from Maven Central into .cache/kafka/lib.
# Idempotent: does nothing when the jars for the pinned pom are already there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
pom="$root/tools/kafka/pom.xml"
lib="$root/.cache/kafka/lib"
stamp="$lib/.pom.sha256"

want="$(sha256sum "$pom" | cut -d' ' -f1)"
# The stamp is written last, so its presence means a complete copy for this exact pom.
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && compgen -G "$lib/kafka_2.13-*.jar" >/dev/null; then
  echo "kafka jars: up to date in ${lib#"$root"/}"
  exit 0
fi

command -v mvn >/dev/null || { echo "kafka jars: mvn not found (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "kafka jars: java not found (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }

tmp="$lib.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$tmp"
rm -rf "$lib"
mv "$tmp" "$lib"
echo "$want" >"$stamp"
echo "kafka jars: $(ls "$lib"/*.jar | wc -l) jars in ${lib#"$root"/}"

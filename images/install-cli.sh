#!/bin/sh
# Install one agent CLI from its package-lock.json and an npm cache, the same way on the host (images/clis.py, with
# network: this fills the cache) and in the images' build stages (with --offline, from that cache):
#
#     install-cli.sh ROOT/KIND CACHE [NPM_FLAG...]      # ROOT/KIND holds package.json + package-lock.json
#
# npm runs no package's install script: what they do is done below, so nothing runs that the lock does not pin and
# the result does not depend on the building host's CPU. The CLI's commands are linked into ROOT/bin.
set -eu
dir=$1 cache=$2
shift 2
kind=$(basename "$dir")
cd "$dir"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --cache "$cache" "$@"
case "$kind" in
    claude-code)   # its postinstall copies the platform's native binary over bin/claude.exe; the copy is enough
        node node_modules/@anthropic-ai/claude-code/install.cjs
        rm -rf node_modules/@anthropic-ai/claude-code-linux-*
        ;;
    opencode)      # its postinstall picks the AVX2 build when the installing CPU has AVX2: take the baseline build
        mv node_modules/opencode-linux-x64-baseline/bin/opencode node_modules/opencode-ai/bin/opencode.exe
        rm -rf node_modules/opencode-linux-*
        ;;
esac
mkdir -p ../bin
for command in node_modules/.bin/*; do
    ln -sfn "../$kind/$command" "../bin/$(basename "$command")"
done

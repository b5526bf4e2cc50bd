#!/usr/bin/env bash
# Optional system packages for the full test suite: FluidSynth + the GM soundfont (synthetic corpus
# tests) and Chromium (the browser end-to-end test). Installed when we are root with apt-get;
# otherwise the tests that need them skip with a reason. `make run` never needs them.
set -u
need=()
command -v fluidsynth >/dev/null 2>&1 || need+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need+=(timgm6mb-soundfont)  # the held-out set (training/heldout)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages for the tests: ${need[*]}"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}") \
    >/tmp/system-deps.log 2>&1 || echo "could not install ${need[*]} (see /tmp/system-deps.log): those tests will skip"
else
  echo "missing ${need[*]} and not root with apt-get: those tests will skip"
fi
exit 0

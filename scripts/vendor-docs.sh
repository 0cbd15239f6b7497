#!/usr/bin/env bash
# Refresh the API docs' assets served by /docs and /redoc (no CDN: they work offline).
# Versions are pinned here; run from the repository root, then commit the files.
set -euo pipefail
SWAGGER=5.35.0
REDOC=2.5.4
DEST=src/inferd/http/docs_static
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "swagger-ui-dist@$SWAGGER" "redoc@$REDOC" >/dev/null)
tar xzf "$TMP/swagger-ui-dist-$SWAGGER.tgz" -C "$TMP" && mv "$TMP/package" "$TMP/swagger"
tar xzf "$TMP/redoc-$REDOC.tgz" -C "$TMP" && mv "$TMP/package" "$TMP/redoc"
mkdir -p "$DEST"
cp "$TMP"/swagger/{swagger-ui-bundle.js,swagger-ui.css,favicon-32x32.png} "$DEST/"
cp "$TMP/swagger/LICENSE" "$DEST/LICENSE.swagger-ui"
cp "$TMP/redoc/bundles/redoc.standalone.js" "$DEST/"
cp "$TMP/redoc/LICENSE" "$DEST/LICENSE.redoc"
echo "vendored swagger-ui-dist $SWAGGER and redoc $REDOC into $DEST"

#!/bin/sh
# Smoke checks against a live server: SPEC §5's worked examples, corrections and bad
# requests.
#
#   tests/smoke.sh [BASE_URL]        (default: $BASE_URL, else http://127.0.0.1:3000)
#
# Tokens, for a server that has them configured: CHECKOUT_TOKEN (one of its CHECKOUT_TOKENS)
# and SUPPORT_TOKEN (one of its SUPPORT_TOKENS) are sent as `Authorization: Bearer …`.
# Unset, no token is sent, which a server without tokens accepts from loopback clients.
#
# Values carry a random suffix, so the checks pass on a database that already has data.
# Prints each check; exits non-zero on the first mismatch. Needs curl and python3.
set -eu

BASE_URL=${1:-${BASE_URL:-http://127.0.0.1:3000}}
RUN=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
# Phone numbers: digits only, unique to this run.
NUM=$(python3 -c 'import random; print(random.randrange(10**8, 10**9))')
failures=0

bearer() {  # bearer TOKEN -> the header line for `curl -H @-`, or nothing without a token
    # Read from standard input, so that the token never shows in the process list.
    [ -z "$1" ] || printf 'Authorization: Bearer %s\n' "$1"
}

post() {  # post BODY [CONTENT_TYPE [TOKEN]] -> prints "STATUS BODY"
    bearer "${3-${CHECKOUT_TOKEN:-}}" | curl -sS -o /tmp/smoke.$$ -w '%{http_code}' -X POST \
        "$BASE_URL/identify" -H @- -H "Content-Type: ${2:-application/json}" --data "$1"
    printf ' '
    cat /tmp/smoke.$$
    rm -f /tmp/smoke.$$
}

get() {  # get PATH -> prints "STATUS BODY", with the support token
    bearer "${SUPPORT_TOKEN:-}" | curl -sS -o /tmp/smoke.$$ -w '%{http_code}' \
        "$BASE_URL$1" -H @-
    printf ' '
    cat /tmp/smoke.$$
    rm -f /tmp/smoke.$$
}

call() {  # call METHOD PATH [BODY] -> prints "STATUS BODY", with the support token
    bearer "${SUPPORT_TOKEN:-}" | curl -sS -o /tmp/smoke.$$ -w '%{http_code}' -X "$1" \
        "$BASE_URL$2" -H @- -H "Content-Type: application/json" ${3:+--data "$3"}
    printf ' '
    cat /tmp/smoke.$$
    rm -f /tmp/smoke.$$
}

# The customers this run makes (their primary ids), erased when it ends, pass or fail:
# the smoke checks leave no personal data behind.
made=""
erase_made() {
    for id in $made; do
        call DELETE "/contacts/$id" >/dev/null 2>&1 || true
    done
    [ -z "$made" ] || echo "erased the customers this run made: $made"
}
trap erase_made EXIT

field() {  # field RESPONSE PYTHON_EXPR -> evaluates EXPR with c = the "contact" object
    printf '%s' "$1" | cut -d' ' -f2- | python3 -c "import json,sys; c=json.load(sys.stdin).get('contact'); print($2)"
}

check() {  # check DESCRIPTION ACTUAL EXPECTED
    if [ "$2" = "$3" ]; then
        echo "ok    $1"
    else
        echo "FAIL  $1: expected [$3], got [$2]"
        failures=$((failures + 1))
    fi
}

echo "smoke checks against $BASE_URL (run $RUN)"

# Worked example A.
L="lorraine.$RUN@hillvalley.edu"; M="mcfly.$RUN@hillvalley.edu"; P="1$NUM"
r=$(post "{\"email\":\"$L\",\"phoneNumber\":\"$P\"}")
if [ "${r%% *}" = 401 ]; then
    echo "FAIL  the server wants a token: set CHECKOUT_TOKEN and SUPPORT_TOKEN"
    exit 1
fi
check "A1 new e-mail and phone: 200" "${r%% *}" 200
primary=$(field "$r" "c['primaryContactId']")
made="$primary"
check "A1 answer is the new primary alone" "$(field "$r" "c['emails'], c['phoneNumbers'], c['secondaryContactIds']")" "['$L'] ['$P'] []"
r=$(post "{\"email\":\"$M\",\"phoneNumber\":\"$P\"}")
secondary=$(field "$r" "c['secondaryContactIds'][0]")
expected="$primary ['$L', '$M'] ['$P'] [$secondary]"
check "A2 new e-mail, known phone: a secondary of the primary" \
    "$(field "$r" "c['primaryContactId'], c['emails'], c['phoneNumbers'], c['secondaryContactIds']")" "$expected"
for body in "{\"email\":null,\"phoneNumber\":\"$P\"}" "{\"email\":\"$L\",\"phoneNumber\":null}" "{\"email\":\"$M\"}"; do
    r=$(post "$body")
    check "A3 $body: same customer" \
        "$(field "$r" "c['primaryContactId'], c['emails'], c['phoneNumbers'], c['secondaryContactIds']")" "$expected"
done

# Worked example B.
G="george.$RUN@hillvalley.edu"; B="biffsucks.$RUN@hillvalley.edu"; P1="2$NUM"; P2="3$NUM"
george=$(field "$(post "{\"email\":\"$G\",\"phoneNumber\":\"$P1\"}")" "c['primaryContactId']")
biff=$(field "$(post "{\"email\":\"$B\",\"phoneNumber\":\"$P2\"}")" "c['primaryContactId']")
made="$made $george $biff"
r=$(post "{\"email\":\"$G\",\"phoneNumber\":\"$P2\"}")
check "B  bridging two customers: the newer primary becomes a secondary of the older" \
    "$(field "$r" "c['primaryContactId'], c['emails'], c['phoneNumbers'], c['secondaryContactIds']")" \
    "$george ['$G', '$B'] ['$P1', '$P2'] [$biff]"

# Normalisation.
r=$(post "{\"email\":\"  ${L}  \",\"phoneNumber\":\"($(echo "$P" | cut -c1-3)) $(echo "$P" | cut -c4-)\"}")
check "normalised e-mail and phone match the same customer" "$(field "$r" "c['primaryContactId']")" "$primary"

# Look-ups (support role).
r=$(get "/contacts/$secondary")
check "look-up of a secondary row: its customer" "${r%% *} $(field "$r" "c['primaryContactId']")" "200 $primary"

# Access.
r=$(post "{\"email\":\"$L\"}" application/json "smoke-unknown-token-$RUN$RUN")
check "unknown token: 401 unauthorized" "${r%% *} $(printf '%s' "$r" | grep -o '"code":"[a-z_]*"')" '401 "code":"unauthorized"'
if [ -n "${CHECKOUT_TOKEN:-}" ]; then
    r=$(post "{\"email\":\"$L\"}" application/json "")
    check "no token where tokens are configured: 401" "${r%% *}" 401
fi

# Corrections (support): split example B's customer again, then erase george.
r=$(call POST "/contacts/$biff/detach" "{\"phoneNumber\":\"9$NUM\"}")
check "detach a value the customer lacks: 409" "${r%% *}" 409
r=$(call POST "/contacts/$biff/detach" "{\"email\":\"$G\"}")
check "detach george's e-mail: the customer splits in two" \
    "${r%% *} $(printf '%s' "${r#* }" | python3 -c "import json,sys; print([c['primaryContactId'] for c in json.load(sys.stdin)['customers']])")" \
    "200 [$george, $biff]"
r=$(call DELETE "/contacts/$george")
check "erase george's customer: 200" "${r%% *}" 200
r=$(call GET "/contacts/$george")
check "an erased row is not found: 404" "${r%% *}" 404

# Bad requests.
r=$(post '{"email":"not-an-address"}')
check "invalid e-mail: 400 invalid_field" "${r%% *} $(field "$r" "None") $(printf '%s' "$r" | grep -o '"code":"[a-z_]*"')" '400 None "code":"invalid_field"'
r=$(post '{"phoneNumber":true}')
check "boolean phone number: 400" "${r%% *}" 400
r=$(post '{}')
check "neither identifier: 400" "${r%% *}" 400
r=$(post '{"email":' )
check "malformed JSON: 400" "${r%% *}" 400
r=$(post '{"email":"a@x.io"}' text/plain)
check "not JSON: 415" "${r%% *}" 415
status=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "$BASE_URL/identify")
check "PUT /identify: 405" "$status" 405

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all smoke checks passed"

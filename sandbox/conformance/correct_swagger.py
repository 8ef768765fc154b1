#!/usr/bin/env python3
"""Write a corrected copy of the official Connection Requests v3.2 Swagger.

The official file (connection-requests-v3.2.swagger.json, kept byte for byte as
published) contradicts the v3.2 reference page in a few places. Schemathesis
runs against the corrected copy this script writes. Every correction, and why:

 1. ConnectionRequestCollection.Items is a `$ref` to ONE ConnectionRequestGet;
    the page's schema says `Items` is an `array` of Connection Request, and
    both examples show a JSON array.                 -> type: array, items: $ref
 2. NextPage: the page says it is `NULL` when there are no more requests (the
    JSON example and Scenario 1 step 4); the Swagger only allows a string.
                                                     -> x-nullable: true
 3. ConnectionRequestGet/UserEmailAddresses: the page's examples carry `null`
    for middleName and email2..email5 (and e-mail-only suppliers get no
    loyaltyNumber); the Swagger types them as plain strings.
                                                     -> x-nullable: true on every
                                                        string field except ID, URI,
                                                        status, lastModified, userId
 4. No operation declares 401, which the HTTP status codes page gives when the
    Authorization header is missing (and which the sandbox answers for a
    missing, unknown or expired bearer).             -> 401 added everywhere
 5. PUT's 204 carries a `Void` schema; a 204 has no body by definition.
                                                     -> schema removed from 204
 6. ConnectionRequestPut.status is optional and free text; the page marks the
    status **Required** and lists the codes (CRSUC, CRRET, CREU1-3; the
    Swagger's own description adds the legacy CRPA1, CRPA2).
                                                     -> required + enum
 7. ConnectionRequestCollection and ConnectionRequestGet have no `type: object`
    (JSON Schema would then accept any JSON value).  -> type: object

Not corrected (they do not contradict the page, they only do not fit a local
run): host/basePath/schemes (https://us.api.concursolutions.com/api/v3.2) —
the run passes --url http://127.0.0.1:PORT/api/v3.2 instead; the collection
path has no trailing slash while the page writes `/connectionrequests/` — the
sandbox serves both; the security definition names the password flow while the
page polls with the client-credentials app token — the run sends that token.
"""

import copy
import json
import sys

NULLABLE_EXCEPT = {"ID", "URI", "status", "lastModified", "userId"}
STATUSES = ["CRSUC", "CRRET", "CREU1", "CREU2", "CREU3", "CRPA1", "CRPA2"]


def correct(spec: dict) -> dict:
    s = copy.deepcopy(spec)
    d = s["definitions"]

    coll = d["ConnectionRequestCollection"]
    coll["type"] = "object"
    coll["properties"]["Items"] = {
        "type": "array",
        "description": "The result collection.",
        "items": {"$ref": "#/definitions/ConnectionRequestGet"},
    }
    coll["properties"]["NextPage"]["x-nullable"] = True

    get = d["ConnectionRequestGet"]
    get["type"] = "object"
    for name, prop in get["properties"].items():
        if prop.get("type") == "string" and name not in NULLABLE_EXCEPT:
            prop["x-nullable"] = True
    emails = d["UserEmailAddresses"]
    emails["type"] = "object"
    for prop in emails["properties"].values():
        prop["x-nullable"] = True

    put = d["ConnectionRequestPut"]
    put["type"] = "object"
    put["required"] = ["status"]
    put["properties"]["status"]["enum"] = STATUSES

    for path in s["paths"].values():
        for op in path.values():
            op["responses"].setdefault(
                "401",
                {"description": "Unauthorized: no, unknown or expired bearer token",
                 "schema": {"$ref": "#/definitions/Void"}},
            )
            if "204" in op["responses"]:
                op["responses"]["204"].pop("schema", None)
    return s


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: correct_swagger.py OFFICIAL.json CORRECTED.json", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(correct(spec), f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

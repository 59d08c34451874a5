"""Writes N (prompt, response) rows for the encoder benchmark: the first Human turn and the
first Assistant answer of each HH-RLHF transcript (chosen, then rejected), in file order.

    make_pairs.py HH.jsonl OUT.jsonl --count 1000
"""

import argparse
import json


def first_exchange(transcript):
    human = transcript.split("\n\nHuman:", 1)[1]
    prompt, answer = human.split("\n\nAssistant:", 1)
    return prompt.strip(), answer.split("\n\nHuman:", 1)[0].strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    for line in open(args.source):
        row = json.loads(line)
        for key in ("chosen", "rejected"):
            prompt, response = first_exchange(row[key])
            rows.append({"prompt": prompt, "response": response})
    with open(args.out, "w") as out:
        for row in rows[: args.count]:
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes a large database of MRM Chat 2 for timing `mrm-chat import-django`.

It copies the original's SQLite sample (its own Django schema and migration records) and adds
users, chats with participants, messages and AI conversations in the same tables, with
Django-format timestamps and password hashes:

    bench/django-source.py OUT.sqlite3 [--messages 1000000] [--chats 1000] [--users 2000]
"""

import argparse
import datetime
import os
import random
import shutil
import sqlite3

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "mrm-chat-2",
                      "mrmchat2_sample.sqlite3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--chats", type=int, default=1_000)
    parser.add_argument("--users", type=int, default=2_000)
    args = parser.parse_args()
    shutil.copyfile(SAMPLE, args.out)
    os.chmod(args.out, 0o644)
    db = sqlite3.connect(args.out)
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    rng = random.Random(7)
    start = datetime.datetime(2025, 1, 1)
    stamp = lambda seconds: (start + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f")
    # One real hash shared by all: `Sample-pass-2026`, as in the sample.
    (password,) = db.execute("SELECT password FROM chat_user WHERE username = 'ana'").fetchone()
    first_user = db.execute("SELECT MAX(id) FROM chat_user").fetchone()[0] + 1
    db.executemany(
        "INSERT INTO chat_user (id, password, last_login, is_superuser, username, first_name, "
        "last_name, email, is_staff, is_active, date_joined, user_type) "
        "VALUES (?, ?, NULL, 0, ?, '', '', ?, 0, 1, ?, 'student')",
        ((first_user + i, password, f"user{i}", f"user{i}@example.org", stamp(i))
         for i in range(args.users)),
    )
    users = list(range(first_user, first_user + args.users))
    first_chat = db.execute("SELECT MAX(id) FROM chat_chat").fetchone()[0] + 1
    chats = list(range(first_chat, first_chat + args.chats))
    db.executemany("INSERT INTO chat_chat (id, name, created_at) VALUES (?, ?, ?)",
                   ((c, f"chat {c}", stamp(c)) for c in chats))
    members = {c: rng.sample(users, 8) for c in chats}
    db.executemany("INSERT INTO chat_chat_participants (chat_id, user_id) VALUES (?, ?)",
                   ((c, u) for c in chats for u in members[c]))
    first_message = db.execute("SELECT MAX(id) FROM chat_message").fetchone()[0] + 1

    def messages():
        for i in range(args.messages):
            chat = chats[rng.randrange(len(chats))]
            yield (first_message + i, f"message {i}: " + "lorem ipsum " * rng.randrange(1, 8),
                   stamp(10_000 + i), chat, rng.choice(members[chat]))

    db.executemany("INSERT INTO chat_message (id, content, timestamp, chat_id, sender_id) "
                   "VALUES (?, ?, ?, ?, ?)", messages())
    first_ai = db.execute("SELECT MAX(id) FROM ai_chat_aichat").fetchone()[0] + 1
    ai_chats = [(first_ai + i, users[i % len(users)]) for i in range(args.chats)]
    db.executemany(
        "INSERT INTO ai_chat_aichat (id, title, system_prompt, created_at, updated_at, "
        "related_chat_id, user_id) VALUES (?, 'AI chat', 'You are a helpful assistant.', ?, ?, NULL, ?)",
        ((a, stamp(a), stamp(a), u) for a, u in ai_chats),
    )
    db.executemany(
        "INSERT INTO ai_chat_aimessage (role, content, timestamp, prompt_tokens, "
        "completion_tokens, total_tokens, ai_chat_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ((role, "text", stamp(20_000_000 + a * 10 + k), *(tokens if role == "assistant" else (None,) * 3), a)
         for a, _ in ai_chats for k in range(10)
         for role, tokens in [("user" if k % 2 == 0 else "assistant", (100 + k, 20, 120 + k))]),
    )
    db.commit()
    counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
              for t in ["chat_user", "chat_chat", "chat_message", "ai_chat_aichat", "ai_chat_aimessage"]}
    print(args.out, counts)


if __name__ == "__main__":
    main()

"""Seeded synthetic chat transcripts: the codec's training and evaluation text.

The bundled codec learns to read pages made by our renderer, so it needs a lot of page
text that looks like the conversations the memory will store: planning, debugging,
travel, finance and support chats between a user and an assistant, with names, numbers,
dates, amounts, URLs, e-mail addresses, ids and hashes, code, markdown and Korean.
This module makes that text from templates filled with sampled values:

- words are Zipf-sampled from wordfreq's English and Korean lists (tens of thousands of
  words), so character and word statistics resemble real text;
- people, companies, addresses, e-mails, URLs and phone numbers come from Faker pools
  (en_US/en_GB/en_CA and ko_KR);
- code is real Python from the standard library's source files, plus templated
  JavaScript, SQL and shell.

**Train and eval differ in their sources, not only their seeds.** Every source is split
in two: English and Korean vocabularies by a hash of each word (the most frequent words,
words of at most three ASCII letters, one-syllable words, and words both splits' templates,
entities or code need form a shared core: about a third of the eval split's 20,000 English
words), entity pools by a hash of each
entity (drawn with different Faker seeds and locale mixes), stdlib code by a hash of the
top-level module, and templates by position. So a model trained on ``"train"`` text never
sees an ``"eval"`` word outside the core, entity, code snippet or template.

The sources are built once with Faker and wordfreq (``tools/export_synth_sources.py``)
and stored as a small data directory (``data/synth`` in the repository, or
``$OPTICMEM_SYNTH_DIR``). Generation reads only that directory, so it runs where neither
library is installed (the GPU machine). Where the directory is missing and both
libraries import, small sources are built in-process instead.

>>> from opticmem.encoder.synth import generate_conversation
>>> turns = generate_conversation(7, "train")     # doctest: +SKIP
>>> turns[0].role in ("user", "system")           # doctest: +SKIP
True
"""

from __future__ import annotations

import base64
import bisect
import datetime as _dt
import gzip
import hashlib
import itertools
import json
import logging
import os
import random
import re
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from opticmem.render.layout import (
    PageLayout,
    RenderSettings,
    TurnText,
    has_visible_text,
    iso_seconds,
    layout_turn,
    paginate,
)

log = logging.getLogger(__name__)

Split = Literal["train", "eval"]
SPLITS: tuple[Split, Split] = ("train", "eval")

DATA_ENV = "OPTICMEM_SYNTH_DIR"
"""Environment variable naming the exported sources directory."""
FORMAT_VERSION = 1
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "synth"
"""``data/synth`` in the repository root (gitignored; made by the export tool)."""
EVAL_SOURCES_DIR = Path(__file__).resolve().parent / "eval_sources"
"""The eval split's sources shipped with the package (a slice of the full export, written
by ``tools/export_synth_sources.py --packaged-eval``): held-out text for ``opticmem eval``
on any install, disjoint from what the bundled codec trained on."""


class SynthDataError(RuntimeError):
    """The generator's sources are missing, unreadable or stale."""


# =========================================================================== templates
#
# Template strings contain slots «name» (filled by _Gen.slot) and, for Korean vocabulary
# nouns only, «kn~p» where p picks a particle glued to the noun (see _PARTICLES). A slot
# is never glued to letters: word statistics, and the train/eval word split, stay exact.
#
# Every list in _SPLIT_T is dealt to the splits by position: even indexes to "train",
# odd to "eval". Lists in _SHARED_T are used by both splits; their words join the core.

_SPLIT_T: dict[str, tuple[str, ...]] = {
    "system": (
        "You are a helpful assistant for «company». Answer concisely and cite ticket "
        "numbers when you mention them.",
        "You are «first», a support agent at «company». Be friendly, confirm order ids, "
        "and never repeat full card numbers.",
        "You are a coding assistant. Prefer small, tested changes and explain trade-offs.",
        "Today is «date». The user is in «city». Quote prices in «cur».",
        "You are a travel planner. Keep itineraries realistic and include travel times "
        "between stops.",
        "You help the finance team at «company» reconcile invoices and flag anything over "
        "«amount».",
        "Act as a senior engineer reviewing code for correctness, clarity and performance.",
        "You are a bilingual Korean/English assistant for «company_ko». Reply in the user's "
        "language.",
        "Context: the user works as «job» at «company». Keep answers under 300 words unless "
        "asked for detail.",
        "You are an operations assistant with read access to the order database. Tools: "
        "lookup_order, refund, send_email.",
    ),
    "open_planning": (
        "Can you help me plan the «w» project? We have «int» people and the deadline is «date».",
        "I need a rollout plan for «product». Kickoff is «date» and «name» owns the budget.",
        "Let's draft milestones for Q«q». Budget is «amount», and «first» wants a demo by «date».",
        "We're moving the «w» launch. What's a realistic timeline if design finishes on «date»?",
        "Help me break this into tasks: migrate «w» to the new «w» service before «date».",
        "Can you turn these notes into a project plan? «wz». Owner: «name» («email»).",
        "Our offsite is «date» at «address». I need an agenda for «int» people.",
        "What should the first two weeks of the «W» «W» initiative look like?",
        "Draft a RACI for the «w» workstream. People: «first», «first», «first» and me.",
        "I have to present the roadmap to «company» on «date». Can you outline the deck?",
        "Can you estimate how long the «w» refactor takes? It touches «int» files.",
        "Plan a hiring pipeline for «int» «job» roles starting «month».",
    ),
    "open_debug": (
        "I'm getting this error when I run the «w» job:\n«traceback»",
        "Why does this return None?\n«codeblock»",
        "My «lang» script hangs after «int» iterations. Here's the relevant part:\n«codeblock»",
        "The build fails on CI but not locally. Log:\n«logs»",
        "Can you review this function? It feels slow for «int» rows.\n«codeblock»",
        "This query times out on production (about «int» rows in «ident»):\n«sqlblock»",
        "Getting «errtype» in «file» line «int». Any idea?",
        "How do I make this async without breaking the callers?\n«codeblock»",
        "Tests pass but coverage dropped to «pct». What am I missing here?\n«codeblock»",
        "After upgrading to «ver» the «w» endpoint returns 500. Stack trace:\n«traceback»",
        "Our deploy script exits with code «int»:\n«shellblock»",
        "What's the difference between «code» and «code» here?",
    ),
    "open_travel": (
        "I'm flying to «city» on «date» for «int» days. Can you plan an itinerary?",
        "We land at «time» on flight «flight». What's the fastest way from the airport to "
        "«address»?",
        "Planning a trip to Seoul with «int» friends in «month». Budget around «amount» each.",
        "Can you compare hotels near «address» under «amount» a night?",
        "My flight «flight» got cancelled. Booking ref «pnr». What are my options?",
        "Help me pack for «int» days in «city», forecast says «temp».",
        "Suggest a «int»-day road trip starting from «city» with at most «dur» of driving a day.",
        "Is «dur» enough for a layover at Incheon? Arriving «time», next flight «flight».",
        "What's a good rainy-day plan in «city»? We're staying near «address».",
        "Can you convert «amount» to won and tell me roughly what that buys in Seoul?",
    ),
    "open_finance": (
        "Can you help me reconcile these invoices? Total should be «amount».\n«csv»",
        "Our monthly burn is «amount» and we have «amount» in the bank. How long is the runway?",
        "Build me a budget for the «w» team: «int» people, «amount» for tools, travel «amount».",
        "Invoice «invoice» from «company» says «amount», but the PO was «amount». What do I do?",
        "Explain the difference between accrual and cash basis for our «w» revenue.",
        "Split «amount» between «int» people with «pct» tip. Who owes what?",
        "Is a «pct» raise on «amount» in line with inflation of «pct»?",
        "We got a refund of «amount» on «date». How should it be booked?",
        "Compare these two quotes: «company» at «amount» and «company» at «amount» per year.",
        "What's the monthly payment on «amount» at «pct» over «int» years?",
    ),
    "open_support": (
        "My order «order» hasn't arrived. It was supposed to come on «date».",
        "I was charged twice for «order». Card ending «last4». Please help.",
        "How do I change the e-mail on my account from «email» to «email»?",
        "The app logs me out every «dur». Version «ver», phone is a «W» «int».",
        "I want to return «product». The receipt number is «invoice».",
        "Can you update the shipping address for «order» to «address»?",
        "Password reset e-mails never arrive at «email». Checked spam already.",
        "Ticket «ticket» was closed but the problem is still there.",
        "Why did my subscription renew at «amount» instead of «amount»?",
        "Can I get an invoice with our VAT number «vat» on it?",
    ),
    "open_data": (
        "Write a SQL query that gives monthly revenue per region from «ident».",
        "How do I find duplicate rows in «ident» by «ident» and «ident»?",
        "Here's a sample of the export, can you spot what's wrong?\n«csv»",
        "I need a pandas snippet to pivot «ident» by week and sum «ident».",
        "Our dashboard says «int» active users but the database says «int». Why?",
        "Can you explain what this query does?\n«sqlblock»",
        "What's a good way to sample «int» rows evenly from a «int»-row table?",
        "The «w» metric jumped «pct» on «date». How would you investigate?",
        "Convert this log into a table of errors per hour:\n«logs»",
        "Which index would speed this up?\n«sqlblock»",
    ),
    "open_writing": (
        "Draft a polite e-mail to «name» at «company» asking to move our call to «date» «time».",
        "Can you make this paragraph shorter and clearer? «wz» «wz»",
        "Write release notes for «ver»: fixed «w» bug, new «w» export, faster «w».",
        "Help me reply to «first»; they're upset about the delay on «ticket».",
        "Write a short bio for «name», «job» at «company».",
        "Translate this into Korean for our partner at «company_ko»: «wz».",
        "Can you write a LinkedIn post about our «w» launch on «date»?",
        "Summarize this thread in three bullets for «first».",
        "Write a job ad for a «job» in «city», salary «amount».",
        "Proofread: «wz», «wz». «wz»?",
    ),
    "open_ops": (
        "How do I roll back the «w» deployment to «ver»?",
        "Disk on «host» is at «pct». What can I safely delete?",
        "Set up a cron job that backs up «path» every night at «time».",
        "Our TLS certificate for «domain» expires on «date». How do we renew it?",
        "Nginx returns 502 for «url». Upstream is «ip»:«port».",
        "Write a shell one-liner to find files over «int» MB under «path».",
        "The «w» pod keeps restarting. Events:\n«logs»",
        "How should we rotate the API keys for «company» without downtime?",
        "What's eating memory on «host»? Top shows «int» MB for «ident».",
        "Can you write a GitHub Actions workflow that runs tests on «lang»?",
    ),
    "ask": (
        "What about «w»?",
        "And if the budget is «amount» instead?",
        "Can you make it shorter?",
        "Could «first» take the «w» part?",
        "What would you cut first?",
        "Does that still work if we start on «date»?",
        "Can you put that in a table?",
        "Why «code» and not «code»?",
        "How long would that take?",
        "Is there a risk with «w»?",
        "Can you add times?",
        "Thanks. Can you send the final version to «email»?",
        "Which option would you pick?",
        "What did we decide about «w» earlier?",
        "Okay, and the «w» part?",
        "Can you double-check the numbers? I get «amount».",
        "Could you write the code for step «int»?",
        "Sounds good, but «first» says «wz».",
        "What if «w» fails halfway?",
        "Remind me, what was the ticket for the «w» issue?",
    ),
    "short_user": (
        "thanks!",
        "ok, go ahead",
        "perfect, thank you",
        "hmm, not quite",
        "yes please",
        "that worked 👍",
        "no, the other one",
        "makes sense",
        "can you try again?",
        "great, that's it",
        "wait, what?",
        "sure",
        "got it, thanks",
        "let's do option 2",
        "still failing",
        "nice",
    ),
    "intro": (
        "Sure, here's a plan.",
        "Good question. Short answer: «wz».",
        "Here's what I'd do.",
        "Let's break it down.",
        "Thanks for the details, «first».",
        "Happy to help with that.",
        "Here's a draft you can adapt:",
        "A few things stand out.",
        "That error usually means the «w» is not what the code expects.",
        "Got it. Based on what you shared:",
        "Here's a realistic version given the «date» deadline.",
        "Right, the numbers add up differently:",
        "I'd approach it in three steps.",
        "Yes, that's doable.",
        "I looked at this again.",
        "Okay, updated below.",
    ),
    "close": (
        "Want me to turn this into a checklist?",
        "Let me know if «first» needs a shorter version.",
        "If you share the full log I can narrow it down.",
        "I can draft the e-mail to «email» next.",
        "Does that match what you had in mind?",
        "Shall I add this to the plan for «date»?",
        "Happy to adjust the numbers if the budget changes.",
        "Next step would be to test it on «host».",
        "Tell me which option you prefer and I'll fill in the details.",
        "I'd re-check the «w» figure before sending it.",
        "Ping me if the «errtype» comes back.",
        "I'll keep «ticket» in mind for the follow-up.",
    ),
    "sentence": (
        "The «w» should be ready by «date», but the «w» «w» still needs a review.",
        "I checked «ticket» and it's assigned to «first».",
        "We spent «amount» on «w» last quarter, roughly «pct» of the budget.",
        "«first» can cover the «w» session at «time».",
        "The meeting is on «weekday» at «time» in room «room».",
        "Use «code» instead of «code»; it avoids the extra «w».",
        "That leaves about «dur» for the «w» step.",
        "Send the signed copy to «email» before «date».",
        "The «w» rate went from «pct» to «pct» after the change.",
        "If the «w» fails, retry up to «int» times with a backoff.",
        "Order «order» shipped on «date» and should arrive within «n» days.",
        "The total comes to «amount», including «amount» in fees.",
        "Call «name» at «phone» if the «w» slips.",
        "Version «ver» fixed the «w» bug but introduced «errtype» on «w».",
        "Our office is at «address».",
        "The dashboard at «url» shows «int» errors since «time».",
        "The «w» «w» is probably the bottleneck here.",
        "Commit «sha7» is where the «w» behaviour changed.",
        "Between «date» and «date» we processed «int» «w» requests.",
        "I'd keep the «w» and drop the «w» for now.",
        "It takes about «dur» to «w» the whole «w».",
        "The file lives at «path» on «host».",
        "«company» quoted «amount» for the «w» work.",
        "Set «ident» to «int» and restart the «w» worker.",
        "The request id was «uuid».",
        "Checksum: «hash».",
        "Flight «flight» leaves at «time» from gate «gate».",
        "Temperature should be around «temp» on «weekday».",
        "That's «int» «w» at «amount» each.",
        "«first» from «company» confirmed by e-mail («email»).",
        "The «w» and «w» numbers don't match: «num» vs «num».",
        "Keep the «w» below «int» per «w».",
    ),
    "title": (
        "Overview",
        "Timeline",
        "Budget",
        "Next steps",
        "Root cause",
        "The fix",
        "Option A: «W» first",
        "Option B: «W» later",
        "Risks",
        "Open questions",
        "Day «n»: «city»",
        "Summary",
        "How to test",
        "What changed",
        "Costs",
        "Why this happens",
        "Checklist",
        "Assumptions",
        "Recommendation",
        "Details",
    ),
    "bullet": (
        "**«W»:** «wz»",
        "«W» «w» by «date»",
        "«first» owns «w» («email»)",
        "Budget: «amount»",
        "Check «code» before «w»",
        "«time» – «W» at «address»",
        "«W» «w» «w» (about «dur»)",
        "Track it in «ticket»",
        "«wz»",
        "Don't forget the «w» «w»",
        "«pct» of «w» goes to «w»",
        "Run «code»",
        "Ask «first» about the «w»",
        "Deadline: «date»",
    ),
    "table": (
        "Milestone:w|Owner:first|Due:date|Status:status",
        "Item:w|Qty:n|Unit price:amount|Total:amount",
        "Day:weekday|Time:time|Plan:wz|Cost:amount",
        "Ticket:ticket|Summary:wz|Assignee:first|Priority:prio",
        "Option:W|Cost:amount|Time:dur|Risk:prio",
        "Date:date|Description:wz|Amount:amount",
        "Metric:w|Before:num|After:num|Change:pct",
        "Name:name|Role:job|E-mail:email",
        "Step:n|Command:code|Expected:wz",
        "City:city|Hotel:company|Nights:n|Price:amount",
        "Invoice:invoice|Vendor:company|Due:date|Amount:amount",
        "Host:host|IP:ip|Port:port|Status:status",
    ),
    "log": (
        "connected to «host»:«port»",
        "retrying «w» in «int»s (attempt «int»/«int»)",
        "«errtype»: «errmsg»",
        "request «uuid» completed in «int»ms",
        "worker «int» picked up job «sha7»",
        "cache miss for key «ident»",
        "shutting down «w» gracefully",
        "health check failed: «url» returned «status_code»",
        "loaded «int» «w» records from «path»",
        "slow query («int»ms): SELECT * FROM «ident»",
    ),
    "errmsg": (
        "'NoneType' object has no attribute '«ident»'",
        "list index out of range",
        "connection refused",
        "invalid literal for int() with base 10: '«w»'",
        "name '«ident»' is not defined",
        "timed out after «int» seconds",
        "«ident»() got an unexpected keyword argument '«ident»'",
        "No such file or directory: '«path»'",
        "duplicate key value violates unique constraint \"«ident»_pkey\"",
        "unsupported operand type(s) for +: 'int' and 'str'",
        "Permission denied: '«path»'",
        "Expecting value: line «int» column «int» (char «int»)",
    ),
    "js": (
        "async function «func»(«ident») {\n  const res = await fetch(`«url»`);\n"
        "  if (!res.ok) throw new Error(`«w» failed: ${res.status}`);\n  return res.json();\n}",
        "const «ident» = «ident».filter((x) => x.«ident» > «int»).map((x) => x.«ident»);",
        "export default function «Ident»({ «ident», «ident» }) {\n  const [«ident», set«Ident»] = "
        "useState(«int»);\n  return <div className=\"«w»\">{«ident»}</div>;\n}",
        "app.get('/api/«w»/:id', async (req, res) => {\n  const item = await db.«ident»"
        ".findById(req.params.id);\n  res.json(item ?? { error: '«w» not found' });\n});",
        "for (let i = 0; i < «ident».length; i++) {\n  total += «ident»[i].«ident» * «num»;\n}",
        "const config = {\n  «ident»: «int»,\n  «ident»: '«w»',\n  retries: «int»,\n};",
        "document.querySelector('#«w»').addEventListener('click', () => {\n"
        "  «func»().then(console.log).catch(console.error);\n});",
        "module.exports = { «func», «func» };",
    ),
    "sql": (
        "SELECT «ident», COUNT(*) AS n\nFROM «ident»\nWHERE created_at >= '«isodate»'\n"
        "GROUP BY «ident»\nORDER BY n DESC\nLIMIT «int»;",
        "UPDATE «ident» SET «ident» = '«w»' WHERE id = «int»;",
        "SELECT o.id, o.total, c.email\nFROM orders o\nJOIN customers c ON c.id = "
        "o.customer_id\nWHERE o.status = '«status»' AND o.total > «num»;",
        "CREATE INDEX idx_«ident»_«ident» ON «ident» («ident», «ident»);",
        "INSERT INTO «ident» («ident», «ident», amount)\nVALUES ('«w»', '«isodate»', «num»);",
        "WITH monthly AS (\n  SELECT date_trunc('month', «ident») AS m, SUM(«ident») AS s\n"
        "  FROM «ident» GROUP BY 1\n)\nSELECT m, s, s - LAG(s) OVER (ORDER BY m) AS delta "
        "FROM monthly;",
        "DELETE FROM «ident» WHERE «ident» < now() - interval '«int» days';",
        "SELECT * FROM «ident» WHERE «ident» IS NULL;",
    ),
    "shell": (
        "git log --oneline «sha7»..HEAD -- «path»",
        "docker run --rm -p «port»:«port» -e «IDENT»=«w» «w»/«w»:«ver»",
        "kubectl rollout undo deployment/«w» -n «w»",
        "find «path» -type f -size +«int»M -mtime +«int» -print",
        "curl -sS -H 'Authorization: Bearer «token»' «url» | jq '.«ident»'",
        "rsync -avz «path»/ «user»@«host»:«path»/",
        "pip install «w»==«ver» && python -m pytest -x -q",
        "tail -n «int» /var/log/«w».log | grep -i «w»",
        "ssh «user»@«ip» 'df -h && free -m'",
        "psql \"$DATABASE_URL\" -c 'select count(*) from «ident»;'",
        "npm run build && npm test -- --watch=false",
        "tar czf «w»-«isodate».tar.gz «path»",
    ),
    "pyt": (
        "def «func»(«ident», «ident»=None):\n    if «ident» is None:\n        «ident» = {}\n"
        "    return [x for x in «ident» if x.«ident» > «int»]",
        "with open(«pstr», encoding=\"utf-8\") as f:\n    rows = [line.split(\",\") for line "
        "in f]\nprint(len(rows))",
        "import pandas as pd\n\ndf = pd.read_csv(«pstr»)\nweekly = df.groupby(pd.Grouper(key="
        "\"«ident»\", freq=\"W\"))[\"«ident»\"].sum()",
        "class «Ident»:\n    def __init__(self, «ident»: int = «int») -> None:\n"
        "        self.«ident» = «ident»\n\n    def «func»(self) -> str:\n"
        "        return f\"{self.«ident»} «w»\"",
        "for attempt in range(«int»):\n    try:\n"
        "        resp = session.get(«pstr», timeout=«int»)\n"
        "        break\n    except TimeoutError:\n        time.sleep(2 ** attempt)",
        "@app.post(\"/«w»\")\nasync def «func»(item: «Ident») -> dict[str, str]:\n"
        "    await db.save(item)\n    return {\"status\": \"«status»\"}",
        "total = sum(x.«ident» for x in «ident») / max(len(«ident»), 1)",
        "assert «func»(«int») == «int», \"«w» broke\"",
    ),
    "ko_open": (
        "«company_ko» «kn» 일정 좀 정리해 줄 수 있어요? 마감은 «date_ko»입니다.",
        "«kn~o» 다음 주까지 끝내야 하는데 어떻게 나누면 좋을까요?",
        "서울 출장 일정 잡아 주세요. «date_ko» 도착, «int»박 예정입니다.",
        "«name_ko» 님께 보낼 메일 초안 부탁드려요. «kn» 관련입니다.",
        "이번 달 «kn» 예산이 «amount_ko» 남았는데 어디에 쓰는 게 좋을까요?",
        "주문번호 «order» 배송이 아직 안 왔어요.",
        "이 코드에서 왜 에러가 나는지 모르겠어요.\n«codeblock»",
        "«kn~w» «kn~g» 차이가 뭔가요?",
        "회의록 요약해 주세요: «kwz». «kwz».",
        "«city_ko» 근처에서 «int»명이 묵을 숙소 추천해 주세요. 1박에 «amount_ko» 이하로요.",
        "«kn» 관련해서 «first» 씨한테 뭐라고 답하면 좋을까요?",
        "내일 «time_ko» 미팅 안건 좀 만들어 주세요.",
    ),
    "ko_sentence": (
        "«kn~t» «date_ko»까지 마무리할 예정입니다.",
        "«name_ko» 님이 «kn~o» 담당합니다.",
        "예산은 «amount_ko», 그중 «kn~e» «pct» 정도 씁니다.",
        "연락처는 «phone_ko», 메일은 «email»입니다.",
        "«kn~s» 늦어지면 «kn~o» 먼저 진행하는 게 좋겠습니다.",
        "회의는 «weekday_ko» «time_ko»에 «kn» 회의실에서 합니다.",
        "주소는 다음과 같습니다: «address_ko»",
        "«kn~g» «kn~o» 다시 확인해 주세요.",
        "티켓 «ticket»에 정리해 두었습니다.",
        "«company_ko» 쪽에서 «amount_ko» 견적을 보냈어요.",
        "«kn~r» 바꾸면 «dur_ko» 정도 줄어듭니다.",
        "이 부분은 «code»를 쓰면 간단해집니다.",
        "«kn~w» «kn~d» 같이 검토하면 좋겠어요.",
        "«date_ko» 기준으로 «int»건이 처리되었습니다.",
        "자세한 내용은 «url»에서 볼 수 있습니다.",
        "«kn» «kn~o» 먼저 끝내고 «kn~e» 들어가죠.",
    ),
    "ko_short": (
        "감사합니다!",
        "네, 그렇게 해 주세요.",
        "좋아요 👍",
        "음, 조금 더 짧게요.",
        "확인했습니다.",
        "그건 아닌 것 같아요.",
        "다시 한 번 해 주세요.",
        "완벽해요, 고마워요.",
        "오 이거 되네요",
        "잠깐만요, 뭐라고요?",
    ),
    "ko_intro": (
        "네, 정리해 드릴게요.",
        "좋은 질문이에요. 핵심만 말씀드리면:",
        "이렇게 진행하면 됩니다.",
        "확인해 보니 «kn~s» 원인으로 보입니다.",
        "아래 초안을 참고해 주세요.",
        "세 단계로 나눠 볼게요.",
        "말씀하신 내용을 기준으로 정리했습니다.",
        "네, 가능합니다.",
    ),
    "ko_close": (
        "더 필요한 부분이 있으면 말씀해 주세요.",
        "이 내용으로 메일 초안도 만들어 드릴까요?",
        "«date_ko» 전에 한 번 더 확인하시는 걸 추천드려요.",
        "표로 정리해 드릴까요?",
        "«first» 씨에게 공유할 요약본도 드릴 수 있어요.",
        "숫자가 바뀌면 다시 계산해 드릴게요.",
    ),
    "ko_title": (
        "개요",
        "일정",
        "예산",
        "다음 단계",
        "원인",
        "해결 방법",
        "주의할 점",
        "요약",
        "«n»일차: «city_ko»",
        "확인 사항",
    ),
    "mixed": (
        "«kn» 쪽 API가 «status_code»을 반환해요. «code» 호출할 때요.",
        "PR «ticket» 리뷰 부탁드립니다. «kn» 로직만 보시면 돼요.",
        "deploy는 «date_ko» «time_ko»에 할게요. rollback plan은 «ver»로 돌리는 겁니다.",
        "Let's sync with «name_ko» from «company_ko» on «date». 회의실은 «room»입니다.",
        "The Seoul office («address_ko») opens at «time».",
        "«first» said the «kn» budget is «amount_ko», roughly «amount».",
        "invoice «invoice» 금액이 «amount_ko», 맞나요?",
        "«kn» 테이블에 index 추가하면 query가 «pct» 빨라집니다.",
        "Meeting notes: «kwz». Action item: «wz».",
        "혹시 «email»로 다시 보내 주실 수 있나요? The first one bounced.",
    ),
}

_SHARED_T: dict[str, tuple[str, ...]] = {
    "status": ("done", "in progress", "blocked", "pending", "open", "closed", "shipped",
               "cancelled", "paid", "overdue", "on hold", "active", "failed", "ok",
               "✓", "✗"),
    "prio": ("low", "medium", "high", "critical", "P0", "P1", "P2", "P3"),
    "level": ("INFO", "WARN", "ERROR", "DEBUG", "INFO", "INFO"),
    "errtype": ("ValueError", "KeyError", "TypeError", "AttributeError", "IndexError",
                "RuntimeError", "TimeoutError", "ConnectionError", "FileNotFoundError",
                "PermissionError", "ZeroDivisionError", "ImportError", "JSONDecodeError",
                "IntegrityError", "AssertionError"),
    "lang": ("Python", "TypeScript", "JavaScript", "Go", "Rust", "Java", "Kotlin", "SQL",
             "Bash", "C++", "Ruby", "Swift"),
    "acro": ("API", "SLA", "KPI", "ETA", "PDF", "CSV", "HTTP", "JSON", "SQL", "CPU", "GPU",
             "VPN", "DNS", "SSO", "OKR", "ROI", "QA", "CI", "PR", "UX", "VAT", "PO", "FAQ"),
    "ticket_prefix": ("OPS", "PAY", "WEB", "APP", "DATA", "SEC", "BUG", "INFRA", "CORE",
                      "MOB", "FIN", "HR"),
    "cur": ("USD", "EUR", "KRW", "GBP", "JPY", "CAD", "SGD", "CHF", "AUD"),
    "airline": ("KE", "OZ", "UA", "DL", "LH", "BA", "AF", "SQ", "NH", "JL", "AA", "CX", "7C",
                "TW", "LJ"),
    "ko_weekday": ("월요일", "화요일", "수요일", "목요일", "금요일", "토요일", "일요일"),
    "ko_end": ("입니다.", "합니다.", "있습니다.", "했어요.", "필요해요.", "좋겠습니다.",
               "확인해 주세요.", "같아요.", "됩니다.", "없어요?", "할까요?", "맞나요?"),
    "fence_lang": ("python", "py", "javascript", "js", "sql", "bash", "sh", "text"),
    # Literal words the generator's code writes (so they join the shared core).
    "month": ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "verb": ("get", "load", "parse", "build", "send", "fetch", "update", "compute", "check",
             "make", "handle", "render", "sync"),
    "big_city": ("Seoul", "Busan", "Tokyo", "Lisbon", "Berlin", "Singapore", "Toronto",
                 "Austin", "London", "Paris", "Jeju", "Osaka", "New York", "San Francisco",
                 "Sydney"),
    "ext": ("py", "ts", "json", "csv", "log", "yaml", "md", "sql", "txt"),
    "src_ext": ("ts", "js", "go", "rs", "py"),
    "env": ("prod", "staging", "internal", "eu", "ap"),
    "tld": ("com", "io", "dev", "co.kr", "net", "org", "app", "kr"),
    "tz": ("KST", "UTC", "PST", "CET", "EST"),
    "token_prefix": ("sk_live_", "ghp_", "xoxb-", "", "AKIA"),
    "vat_cc": ("DE", "FR", "GB", "KR", "NL"),
    "json_key": ("id", "status", "amount", "created_at", "email", "items", "total",
                 "currency", "name", "url", "count", "error"),
    "emoji": ("🙂", "👍", "🎉", "✅", "😅"),
    "lexicon": ("Traceback (most recent call last):", 'File "", line , in', "srv", "home",
                "C:\\Users", "minutes hours days weeks h m", "AM PM am pm", "ORD INV sha256",
                "$ USD EUR CHF CA$ A$ k M", "null true false", "오전 오후 시 분 시간 일 년 월",
                "만 원 억 천만 원"),
}

_PARTICLES: dict[str, tuple[str, str]] = {
    # key: (after a final consonant, after a vowel)
    "s": ("이", "가"),
    "t": ("은", "는"),
    "o": ("을", "를"),
    "w": ("과", "와"),
    "r": ("으로", "로"),
    "e": ("에", "에"),
    "es": ("에서", "에서"),
    "g": ("의", "의"),
    "d": ("도", "도"),
}
_PARTICLE_FORMS: tuple[str, ...] = tuple(sorted({f for p in _PARTICLES.values() for f in p}))

_SLOT_RE = re.compile(r"«(\w+)(?:~(\w+))?»")


def _split_templates(split: Split) -> dict[str, tuple[str, ...]]:
    side = SPLITS.index(split)
    out = {k: v[side::2] for k, v in _SPLIT_T.items()}
    out.update(_SHARED_T)
    return out


@cache
def templates(split: Split) -> dict[str, tuple[str, ...]]:
    """The template lists one split draws from (its half of each list, plus shared ones)."""
    return _split_templates(split)


def template_fingerprint() -> str:
    """Digest of the words each split's templates contain (and the shared ones).

    The exported vocabulary split depends on templates only through these word sets, so
    exports record it and a change of wording that adds or moves a word invalidates them,
    while a change of slots or punctuation does not.
    """
    sets = {s: sorted(_template_words(_split_templates(s))) for s in SPLITS}
    blob = json.dumps([sets, sorted(_template_words(_SHARED_T)), _PARTICLE_FORMS],
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _template_words(lists: dict[str, tuple[str, ...]]) -> set[str]:
    words: set[str] = set()
    for lst in lists.values():
        for t in lst:
            words.update(word_tokens(_SLOT_RE.sub(" ", t)))
    return words


# =========================================================================== words

_EN_CHUNK = re.compile(r"\S+")
_EN_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_HANGUL_RUN = re.compile(r"[가-힣]+")
_DIGIT = re.compile(r"\d")


def word_tokens(text: str) -> list[str]:
    """The words of ``text`` as the train/eval split counts them, lowercased.

    Whitespace-separated chunks that contain a digit (ids, hashes, amounts, dates) are
    skipped; the rest gives English words (camelCase and snake_case split apart) and runs
    of Hangul syllables. Sources and tests use this one definition.

    >>> word_tokens("Ship getUserName to 서울에서 by ORD-123 now")
    ['ship', 'get', 'user', 'name', 'to', '서울에서', 'by', 'now']
    """
    out: list[str] = []
    for chunk in _EN_CHUNK.findall(text):
        if _DIGIT.search(chunk):
            continue
        out.extend(w.lower() for w in _EN_WORD.findall(chunk))
        out.extend(_HANGUL_RUN.findall(chunk))
    return out


_LATIN_RUN = re.compile(r"[A-Za-z]{2,}")
_LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
_LETTER_CUM = tuple(itertools.accumulate(
    (12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0,
     2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1)))
"""English letter frequencies (per cent), cumulative, for pseudo-words."""


def pseudo_words(text: str, rng: random.Random, rate: float) -> str:
    """``text`` with about ``rate`` of its words replaced by letters drawn at random.

    A decoder trained only on real words learns to guess a word from its first letters,
    and then misreads the words it never saw (held-out vocabulary, names, users' jargon).
    Pseudo-words keep every glyph cell and line break where they were but cannot be
    guessed, so they reward reading. Latin runs of two or more letters get letters at
    English frequencies with the original case pattern; Hangul runs get syllables drawn
    from the text's own Hangul. Everything else (digits, punctuation, spacing) is kept.

    >>> pseudo_words("Ship it today", random.Random(0), 0.0)
    'Ship it today'
    >>> len(pseudo_words("Ship it today 서울에서", random.Random(0), 1.0))
    18
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if rate == 0.0:
        return text

    def latin(m: re.Match[str]) -> str:
        word = m.group()
        if rng.random() >= rate:
            return word
        letters = rng.choices(_LETTERS, cum_weights=_LETTER_CUM, k=len(word))
        return "".join(c.upper() if o.isupper() else c for c, o in zip(letters, word, strict=True))

    out = _LATIN_RUN.sub(latin, text)
    pool = [c for c in out if "\uac00" <= c <= "\ud7a3"]
    if not pool:
        return out

    def hangul(m: re.Match[str]) -> str:
        run = m.group()
        return "".join(rng.choices(pool, k=len(run))) if rng.random() < rate else run

    return _HANGUL_RUN.sub(hangul, out)


SYMBOLS = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~–—°€£¥•…±×÷§©®™«»¿¡·"
"""The one-cell punctuation and symbols that :func:`pseudo_symbols` draws from."""
_SYMBOL_SET = frozenset(SYMBOLS)


def pseudo_symbols(text: str, rng: random.Random, rate: float) -> str:
    """``text`` with about ``rate`` of its punctuation and symbols redrawn from
    :data:`SYMBOLS`.

    The counterpart of :func:`pseudo_words` for the characters a language prior guesses
    from context: after pseudo-words, held-out Large pages misread punctuation and symbols
    (``/`` in paths, ``–`` after a time, ``°``, ``$``) 15–20 times as often as letters.
    Each redrawn character takes one cell as the original did, so the layout is unchanged.

    >>> pseudo_symbols("a/b – 3°C", random.Random(0), 0.0)
    'a/b – 3°C'
    >>> out = pseudo_symbols("a/b – 3°C", random.Random(0), 1.0)
    >>> [c.isalnum() or c == " " for c in out] == [c.isalnum() or c == " " for c in "a/b – 3°C"]
    True
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if rate == 0.0:
        return text
    return "".join(
        rng.choice(SYMBOLS) if c in _SYMBOL_SET and rng.random() < rate else c for c in text
    )


def _side(s: str) -> int:
    """0 (train) or 1 (eval), from a stable hash of ``s``."""
    return hashlib.blake2b(s.encode(), digest_size=8).digest()[0] & 1


def _has_batchim(word: str) -> bool:
    o = ord(word[-1]) - 0xAC00
    return 0 <= o < 11172 and o % 28 != 0


def _josa(word: str, key: str) -> str:
    after_consonant, after_vowel = _PARTICLES[key]
    if key == "r" and word and (ord(word[-1]) - 0xAC00) % 28 == 8:  # final ㄹ takes 로
        return word + after_vowel
    return word + (after_consonant if _has_batchim(word) else after_vowel)


# =========================================================================== sources


@dataclass(frozen=True, eq=False)
class Sources:
    """Everything one split samples from: vocabularies with weights, entity pools, code."""

    split: Split
    en_words: tuple[str, ...]
    """English words, most frequent first; the core is shared with the other split."""
    en_freq: tuple[float, ...]
    ko_words: tuple[str, ...]
    ko_freq: tuple[float, ...]
    pools: dict[str, tuple[str, ...]]
    """Faker entities by kind (``name_en``, ``email``, ``address_ko``, …)."""
    code: tuple[str, ...]
    """Python snippets (several lines each) from this split's stdlib modules."""
    modules: tuple[str, ...]
    """The stdlib top-level modules the snippets come from."""
    origin: str = ""

    def __post_init__(self) -> None:
        if not self.en_words or not self.ko_words or not self.code:
            raise SynthDataError(f"{self.split} sources from {self.origin or '?'} are empty")
        missing = [k for k in POOL_KINDS if not self.pools.get(k)]
        if missing:
            raise SynthDataError(f"{self.split} sources from {self.origin or '?'} lack pools "
                                 f"{missing}; re-run tools/export_synth_sources.py")

    def to_json(self) -> dict[str, object]:
        return {
            "split": self.split,
            "en_words": list(self.en_words),
            "en_freq": [round(f, 10) for f in self.en_freq],
            "ko_words": list(self.ko_words),
            "ko_freq": [round(f, 10) for f in self.ko_freq],
            "pools": {k: list(v) for k, v in self.pools.items()},
            "code": list(self.code),
            "modules": list(self.modules),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], origin: str) -> Sources:
        try:
            split = d["split"]
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}")
            return cls(
                split=split,
                en_words=tuple(map(str, d["en_words"])),
                en_freq=tuple(map(float, d["en_freq"])),
                ko_words=tuple(map(str, d["ko_words"])),
                ko_freq=tuple(map(float, d["ko_freq"])),
                pools={str(k): tuple(map(str, v)) for k, v in d["pools"].items()},
                code=tuple(map(str, d["code"])),
                modules=tuple(map(str, d["modules"])),
                origin=origin,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SynthDataError(f"malformed synth sources {origin}: {exc!r}") from exc


POOL_KINDS: tuple[str, ...] = (
    "name_en", "name_ko", "company_en", "company_ko", "address_en", "address_ko",
    "city_en", "city_ko", "email", "url", "domain", "phone_en", "phone_ko", "user",
    "job_en", "job_ko", "product_en",
)
_BIG_POOLS = frozenset({"name_en", "name_ko", "company_en", "company_ko", "address_en",
                        "address_ko", "email"})
# English locale mix per split (ko_KR for Korean kinds in both).
_EN_LOCALES: dict[Split, tuple[str, ...]] = {
    "train": ("en_US", "en_US", "en_GB"),
    "eval": ("en_US", "en_US", "en_CA"),
}
_FAKER_SEED: dict[Split, int] = {"train": 1_000_003, "eval": 2_000_029}
_BLOCKED_STEMS: tuple[str, ...] = (
    "fuck", "shit", "bitch", "cunt", "nigg", "fag", "retard", "whore", "slut", "pussy",
    "porn", "rape", "rapist", "asshole", "dick", "cock", "motherf", "bastard", "tits",
)
"""Slurs and profanity stems: vocabulary words starting with these are dropped."""
EN_VOCAB = 80_000
"""How many of wordfreq's most frequent all-letter English words are used."""
KO_VOCAB = 30_000
EN_CORE_TOP = 1_500
KO_CORE_TOP = 300


def data_dir() -> Path:
    """Where exported sources are looked for: ``$OPTICMEM_SYNTH_DIR`` or ``data/synth``."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else DEFAULT_DATA_DIR


def _source_file(directory: Path, split: Split) -> Path:
    return directory / f"{split}.json.gz"


def read_sources(split: Split, directory: Path | str) -> Sources:
    """Read one split's exported sources from ``directory`` (no Faker, no wordfreq).

    Raises :class:`SynthDataError` naming the file when it is missing, unreadable, of
    another format version, exported with different templates, or holding the other
    split's sources (a renamed copy would have eval text drawn from training sources).
    """
    directory = Path(directory)
    meta_path = directory / "meta.json"
    path = _source_file(directory, split)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        with gzip.open(path, "rt", encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError, EOFError) as exc:
        raise SynthDataError(f"cannot read synth sources {path}: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise SynthDataError(f"{meta_path} has format {meta.get('format')!r}, "
                             f"expected {FORMAT_VERSION}; re-run tools/export_synth_sources.py")
    if meta.get("templates") != template_fingerprint():
        raise SynthDataError(
            f"{meta_path} was exported with other templates ({meta.get('templates')} != "
            f"{template_fingerprint()}); the train/eval word split depends on them: re-run "
            "tools/export_synth_sources.py")
    sources = Sources.from_json(d, origin=str(path))
    if sources.split != split:
        raise SynthDataError(f"{path} holds the {sources.split!r} split's sources, not "
                             f"{split!r}; re-run tools/export_synth_sources.py")
    return sources


@cache
def _sources_cached(split: Split, directory: str | None) -> Sources:
    if directory is not None:
        return read_sources(split, directory)
    d = data_dir()
    if _source_file(d, split).exists():
        return read_sources(split, d)
    try:
        built = build_sources(pool_size=2_000, code_size=600)
    except ImportError as exc:
        # From a wheel, data_dir() is inside site-packages and the export tool is not
        # installed: the extra (built here) or the variable is what such a user can act on.
        raise SynthDataError(
            f"no synth sources at {d}, and they cannot be built here ({exc}): install the "
            f"'synth' extra to build them in-process (pip install 'opticmem[synth]'), or "
            f"set {DATA_ENV} to a folder exported by tools/export_synth_sources.py (in "
            f"opticmem's source repository)") from exc
    log.warning("no exported synth sources at %s; built small ones in-process", d)
    return built[split]


def load_sources(split: Split, directory: Path | str | None = None) -> Sources:
    """The sources of ``split``, cached per process.

    With ``directory`` read only from there. Otherwise read :func:`data_dir` when it holds
    an export, else build small sources in-process (needs Faker and wordfreq).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _sources_cached(split, None if directory is None else str(Path(directory)))


# --------------------------------------------------------------------------- building


def _stdlib_snippets(split: Split, size: int, seed: int) -> tuple[list[str], list[str]]:
    """Python snippets (3–14 lines, ≤ 96 columns) from this split's stdlib modules."""
    root = Path(sysconfig.get_paths()["stdlib"])
    by_module: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if rel[0] in ("site-packages", "dist-packages") or any(
            part in ("test", "tests", "idle_test") for part in rel
        ):
            continue
        top = rel[0].removesuffix(".py")
        if top.startswith("_") or not top.isidentifier():
            continue
        by_module.setdefault(top, []).append(p)
    modules = sorted(m for m in by_module if _side("module:" + m) == SPLITS.index(split))
    blocks: list[str] = []
    for m in modules:
        for p in by_module[m]:
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            run: list[str] = []
            for line in [*lines, ""]:
                line = line.rstrip()
                if line and len(line) <= 96 and "\t" not in line:
                    run.append(line)
                    continue
                if 3 <= len(run) <= 40:
                    blocks.append(_dedent("\n".join(run[:14])))
                run = []
    rng = random.Random(seed)
    rng.shuffle(blocks)
    seen: set[str] = set()
    out: list[str] = []
    for b in blocks:
        if b not in seen and len(b) >= 40:
            seen.add(b)
            out.append(b)
        if len(out) >= size:
            break
    return out, modules


def _dedent(block: str) -> str:
    lines = block.split("\n")
    indent = min(len(x) - len(x.lstrip(" ")) for x in lines if x.strip())
    return "\n".join(x[indent:] for x in lines)


def _faker_pools(split: Split, size: int) -> dict[str, list[str]]:
    """Entity pools for one split: Faker draws whose hash falls on this split's side."""
    from faker import Faker

    side = SPLITS.index(split)
    seed = _FAKER_SEED[split]
    en = [Faker(loc) for loc in _EN_LOCALES[split]]
    ko = Faker("ko_KR")
    for i, f in enumerate([*en, ko]):
        f.seed_instance(seed + i)
    rng = random.Random(seed)

    def en_f() -> Faker:
        return en[rng.randrange(len(en))]

    makers: dict[str, Callable[[], str]] = {
        "name_en": lambda: en_f().name(),
        "name_ko": ko.name,
        "company_en": lambda: en_f().company(),
        "company_ko": ko.company,
        "address_en": lambda: en_f().address().replace("\n", ", "),
        "address_ko": ko.address,
        "city_en": lambda: en_f().city(),
        "city_ko": ko.city,
        "email": lambda: (ko if rng.random() < 0.2 else en_f()).email(),
        "url": lambda: (ko if rng.random() < 0.2 else en_f()).uri(),
        "domain": lambda: (ko if rng.random() < 0.2 else en_f()).domain_name(),
        "phone_en": lambda: en_f().phone_number(),
        "phone_ko": ko.phone_number,
        "user": lambda: (ko if rng.random() < 0.3 else en_f()).user_name(),
        "job_en": lambda: en_f().job(),
        "job_ko": ko.job,
        "product_en": lambda: en_f().catch_phrase(),
    }
    pools: dict[str, list[str]] = {}
    for kind in POOL_KINDS:
        want = size if kind in _BIG_POOLS else max(size // 5, 1)
        seen: set[str] = set()
        items: list[str] = []
        for _ in range(want * 8):
            s = makers[kind]().strip()
            if s and s not in seen and _side(kind + ":" + s) == side:
                seen.add(s)
                items.append(s)
                if len(items) >= want:
                    break
        pools[kind] = items
    return pools


def _fixed_words(split: Split, pools: dict[str, list[str]], code: list[str]) -> set[str]:
    words = _template_words(_split_templates(split))
    for lst2 in pools.values():
        for s in lst2:
            words.update(word_tokens(s))
    for s in pools.get("name_ko", ()):
        words.update(word_tokens(s[1:]))  # given names are used alone
    for c in code:
        words.update(word_tokens(c))
    return words


def build_sources(pool_size: int = 50_000, code_size: int = 6_000) -> dict[Split, Sources]:
    """Build both splits' sources from wordfreq, Faker and the stdlib (slow; needs both
    libraries). ``pool_size`` entities per large pool, a fifth of it for small ones."""
    import wordfreq

    pools = {s: _faker_pools(s, pool_size) for s in SPLITS}
    code: dict[Split, list[str]] = {}
    modules: dict[Split, list[str]] = {}
    for s in SPLITS:
        code[s], modules[s] = _stdlib_snippets(s, code_size, seed=_FAKER_SEED[s])
    fixed = {s: _fixed_words(s, pools[s], code[s]) for s in SPLITS}
    shared = _template_words(_SHARED_T)
    both = fixed["train"] & fixed["eval"]

    def assign(words: list[str], core_top: int) -> dict[Split, list[str]]:
        core = set(words[:core_top]) | shared | both
        out: dict[Split, list[str]] = {"train": [], "eval": []}
        for w in words:
            if w in core or (len(w) <= 3 and w.isascii()) or len(w) == 1:
                out["train"].append(w)
                out["eval"].append(w)
            elif w in fixed["train"]:
                out["train"].append(w)
            elif w in fixed["eval"]:
                out["eval"].append(w)
            else:
                out[SPLITS[_side("word:" + w)]].append(w)
        return out

    en_freq = wordfreq.get_frequency_dict("en", "best")
    ko_freq = wordfreq.get_frequency_dict("ko", "best")
    en_all = [w for w in wordfreq.iter_wordlist("en", "best")
              if w.isascii() and w.isalpha() and w.islower() and len(w) <= 24
              and not w.startswith(_BLOCKED_STEMS) and w not in ("ass", "sex")][:EN_VOCAB]
    ko_all = [w for w in wordfreq.iter_wordlist("ko", "best")
              if _HANGUL_RUN.fullmatch(w)][:KO_VOCAB]
    en_split = assign(en_all, EN_CORE_TOP)
    ko_split = assign(ko_all, KO_CORE_TOP)
    # A Korean word with a particle glued on must not spell a word of the other split:
    # such glued forms join the shared core (repeat until no new conflict appears).
    ko_split = _share_glued(ko_split, ko_freq)
    out: dict[Split, Sources] = {}
    for s in SPLITS:
        out[s] = Sources(
            split=s,
            en_words=tuple(en_split[s]),
            en_freq=tuple(en_freq[w] for w in en_split[s]),
            ko_words=tuple(ko_split[s]),
            ko_freq=tuple(ko_freq[w] for w in ko_split[s]),
            pools={k: tuple(v) for k, v in pools[s].items()},
            code=tuple(code[s]),
            modules=tuple(modules[s]),
            origin="built",
        )
    return out


def _share_glued(split_words: dict[Split, list[str]],
                 freq: dict[str, float]) -> dict[Split, list[str]]:
    """Move every word that a word of one split plus a particle spells, and that only the
    other split has, into both splits; lists stay most frequent first."""
    sets = {s: set(v) for s, v in split_words.items()}
    while True:
        shared: set[str] = set()
        for s, other in zip(SPLITS, SPLITS[::-1], strict=True):
            only_other = sets[other] - sets[s]
            shared.update(w + p for w in sets[s] for p in _PARTICLE_FORMS
                          if w + p in only_other)
        if not shared:
            break
        for s in SPLITS:
            sets[s] |= shared
    return {s: sorted(sets[s], key=lambda w: (-freq[w], w)) for s in SPLITS}


def write_sources(sources: dict[Split, Sources], directory: Path | str,
                  extra_meta: dict[str, object] | None = None) -> dict[str, int]:
    """Write sources as ``meta.json`` plus one gzip-compressed JSON file per split;
    return the size in bytes of each file written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    meta: dict[str, object] = {
        "format": FORMAT_VERSION,
        "templates": template_fingerprint(),
        "splits": {
            s: {"en_words": len(src.en_words), "ko_words": len(src.ko_words),
                "code": len(src.code), "modules": list(src.modules),
                "pools": {k: len(v) for k, v in src.pools.items()}}
            for s, src in sources.items()
        },
        **(extra_meta or {}),
    }
    for s, src in sources.items():
        path = _source_file(directory, s)
        raw = json.dumps(src.to_json(), ensure_ascii=False, separators=(",", ":")).encode()
        # mtime=0 keeps the bytes reproducible.
        with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
            gz.write(raw)
        sizes[path.name] = path.stat().st_size
    meta_path = directory / "meta.json"
    meta_path.write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    sizes[meta_path.name] = meta_path.stat().st_size
    return sizes


# =========================================================================== generation

_MONTHS = _SHARED_T["month"]
_WEEKDAYS = _SHARED_T["weekday"]
_CUR_SIGN = (("$", 0.45), ("€", 0.15), ("£", 0.08), ("₩", 0.12), ("¥", 0.05),
             ("USD ", 0.05), ("EUR ", 0.03), ("CHF ", 0.02), ("CA$", 0.02), ("A$", 0.03))
_CUR_SIGNS = tuple(s for s, _ in _CUR_SIGN)
_CUR_CUM = tuple(sum(w for _, w in _CUR_SIGN[: i + 1]) for i in range(len(_CUR_SIGN)))
_UPPER = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_ALNUM_UP = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _cumulative(weights: Iterable[float]) -> tuple[float, ...]:
    total = 0.0
    out = []
    for w in weights:
        total += w
        out.append(total)
    return tuple(out)


@dataclass(frozen=True, eq=False)
class _Tables:
    """Per-split sampling tables derived from :class:`Sources` (built once)."""

    src: Sources
    tpl: dict[str, tuple[str, ...]]
    en_all: tuple[str, ...]
    en_all_cum: tuple[float, ...]
    en_content: tuple[str, ...]
    en_content_cum: tuple[float, ...]
    en_func: tuple[str, ...]
    en_func_cum: tuple[float, ...]
    ko_all: tuple[str, ...]
    ko_all_cum: tuple[float, ...]
    ko_noun: tuple[str, ...]
    ko_noun_cum: tuple[float, ...]
    first_en: tuple[str, ...]
    pylines: tuple[str, ...]


@cache
def _tables(src: Sources) -> _Tables:
    en_content = [(w, f) for i, (w, f) in enumerate(zip(src.en_words, src.en_freq, strict=True))
                  if i >= 150 and len(w) >= 3]
    ko_noun = [(w, f) for w, f in zip(src.ko_words, src.ko_freq, strict=True) if len(w) >= 2]
    pylines = tuple(sorted({ln.strip() for c in src.code for ln in c.split("\n")
                            if 8 <= len(ln.strip()) <= 48 and not ln.strip().startswith("#")}))
    return _Tables(
        src=src,
        tpl=templates(src.split),
        en_all=src.en_words,
        en_all_cum=_cumulative(src.en_freq),
        en_content=tuple(w for w, _ in en_content),
        en_content_cum=_cumulative(f ** 0.6 for _, f in en_content),
        en_func=src.en_words[:150],
        en_func_cum=_cumulative(src.en_freq[:150]),
        ko_all=src.ko_words,
        ko_all_cum=_cumulative(f ** 0.8 for f in src.ko_freq),
        ko_noun=tuple(w for w, _ in ko_noun),
        ko_noun_cum=_cumulative(f ** 0.7 for _, f in ko_noun),
        first_en=tuple(dict.fromkeys(n.split()[0] for n in src.pools["name_en"]
                                     if n.split()[0][:1].isupper() and "." not in n.split()[0])),
        pylines=pylines or ("return None",),
    )


class _Gen:
    """One conversation's generator state: the rng, the split's tables, the language."""

    def __init__(self, rng: random.Random, tables: _Tables) -> None:
        self.rng = rng
        self.t = tables
        self.tpl = tables.tpl
        self.pools = tables.src.pools
        self.korean = False
        self.today = _dt.date(2019, 1, 1) + _dt.timedelta(days=rng.randrange(8 * 365))

    # ----------------------------------------------------------------- primitives
    def pick(self, kind: str) -> str:
        lst = self.tpl[kind]
        return lst[int(self.rng.random() * len(lst))]

    def pool(self, kind: str) -> str:
        lst = self.pools[kind]
        return lst[int(self.rng.random() * len(lst))]

    def fill(self, template: str) -> str:
        return _SLOT_RE.sub(self._slot_match, template)

    def _slot_match(self, m: re.Match[str]) -> str:
        name, particle = m.group(1), m.group(2)
        fn = _SLOTS.get(name)
        if fn is None:
            raise KeyError(f"unknown template slot «{name}»")
        s = fn(self)
        return _josa(s, particle) if particle else s

    def words(self, n: int) -> list[str]:
        t = self.t
        return self.rng.choices(t.en_all, cum_weights=t.en_all_cum, k=n)

    def phrase(self, n: int) -> list[str]:
        """About ``n`` words alternating runs of frequent function words and Zipf-sampled
        content words, which reads closer to English than independent draws."""
        t, rng = self.t, self.rng
        out: list[str] = []
        func = rng.random() < 0.6
        while len(out) < n:
            if func:
                k = 1 if rng.random() < 0.7 else 2
                out.extend(rng.choices(t.en_func, cum_weights=t.en_func_cum, k=k))
            else:
                k = 1 if rng.random() < 0.55 else (2 if rng.random() < 0.8 else 3)
                out.extend(rng.choices(t.en_content, cum_weights=t.en_content_cum, k=k))
            func = not func
        return out

    def content(self) -> str:
        t = self.t
        return self.rng.choices(t.en_content, cum_weights=t.en_content_cum)[0]

    def ko_noun(self) -> str:
        t = self.t
        return self.rng.choices(t.ko_noun, cum_weights=t.ko_noun_cum)[0]

    # ----------------------------------------------------------------- values
    def date(self) -> _dt.date:
        return self.today + _dt.timedelta(days=self.rng.randint(-200, 400))

    def s_date(self) -> str:
        d, r = self.date(), self.rng.random()
        if r < 0.25:
            return d.isoformat()
        if r < 0.45:
            return f"{_MONTHS[d.month - 1]} {d.day}, {d.year}"
        if r < 0.6:
            return f"{_MONTHS[d.month - 1][:3]} {d.day}"
        if r < 0.7:
            return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"
        if r < 0.8:
            return f"{d.month}/{d.day}/{d.year}"
        if r < 0.88:
            return f"{_WEEKDAYS[d.weekday()]}, {_MONTHS[d.month - 1]} {d.day}"
        if r < 0.94:
            return f"{d.day:02d}.{d.month:02d}.{d.year}"
        return f"{_WEEKDAYS[d.weekday()][:3]} {d.day} {_MONTHS[d.month - 1][:3]}"

    def s_isodate(self) -> str:
        return self.date().isoformat()

    def s_date_ko(self) -> str:
        d, r = self.date(), self.rng.random()
        if r < 0.4:
            return f"{d.year}년 {d.month}월 {d.day}일"
        if r < 0.75:
            return f"{d.month}월 {d.day}일"
        if r < 0.9:
            return f"{d.month}월 {d.day}일({'월화수목금토일'[d.weekday()]})"
        return f"{d.year}.{d.month:02d}.{d.day:02d}"

    def s_time(self) -> str:
        r = self.rng.random()
        h, m = self.rng.randrange(24), self.rng.choice((0, 0, 0, 15, 30, 30, 45, 5, 10, 20, 50))
        if r < 0.45:
            return f"{h:02d}:{m:02d}"
        if r < 0.8:
            return f"{(h - 1) % 12 + 1}:{m:02d} {'AM' if h < 12 else 'PM'}"
        if r < 0.9:
            return f"{(h - 1) % 12 + 1}{'am' if h < 12 else 'pm'}"
        if r < 0.95:
            return f"{h:02d}:{m:02d}:{self.rng.randrange(60):02d}"
        return f"{h:02d}:{m:02d} {self.pick('tz')}"

    def s_time_ko(self) -> str:
        h, m = self.rng.randrange(7, 22), self.rng.choice((0, 0, 30, 15, 45))
        ampm = "오전" if h < 12 else "오후"
        hh = (h - 1) % 12 + 1
        return f"{ampm} {hh}시" + (f" {m}분" if m else "") if self.rng.random() < 0.7 \
            else f"{h:02d}:{m:02d}"

    def s_weekday(self) -> str:
        return self.rng.choice(_WEEKDAYS)

    def s_weekday_ko(self) -> str:
        return self.pick("ko_weekday")

    def s_month(self) -> str:
        return self.rng.choice(_MONTHS)

    def s_q(self) -> str:
        return str(self.rng.randint(1, 4))

    def s_dur(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return f"{self.rng.randint(2, 90)} minutes"
        if r < 0.55:
            return f"{self.rng.randint(1, 12)} hours"
        if r < 0.7:
            return f"{self.rng.randint(1, 9)}h {self.rng.randint(1, 59)}m"
        if r < 0.85:
            return f"{self.rng.randint(2, 21)} days"
        return f"{self.rng.randint(2, 10)} weeks"

    def s_dur_ko(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return f"{self.rng.randint(5, 90)}분"
        if r < 0.7:
            return f"{self.rng.randint(1, 12)}시간"
        return f"{self.rng.randint(2, 21)}일"

    def s_int(self) -> str:
        r = self.rng.random()
        if r < 0.55:
            return str(self.rng.randint(2, 60))
        if r < 0.85:
            return str(self.rng.randint(61, 5000))
        return f"{self.rng.randint(5000, 9_999_999):,}"

    def s_n(self) -> str:
        return str(self.rng.randint(1, 14))

    def s_num(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return f"{self.rng.uniform(0, 1000):.{self.rng.randint(1, 3)}f}"
        if r < 0.6:
            return f"{self.rng.randint(0, 250_000):,}"
        if r < 0.7:
            return f"-{self.rng.uniform(0, 100):.2f}"
        if r < 0.8:
            return f"{self.rng.uniform(1, 9.99):.2f}e-{self.rng.randint(2, 9)}"
        if r < 0.9:
            return f"{self.rng.randint(1, 30)}–{self.rng.randint(31, 90)}"
        return str(self.rng.randint(0, 99))

    def s_pct(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return f"{self.rng.randint(1, 99)}%"
        return f"{self.rng.uniform(0.1, 99.9):.1f}%"

    def s_amount(self) -> str:
        rng = self.rng
        sign = _CUR_SIGNS[min(len(_CUR_SIGNS) - 1,
                              bisect.bisect(_CUR_CUM, rng.random() * _CUR_CUM[-1]))]
        if sign in ("₩", "¥"):
            return f"{sign}{rng.randint(1, 5000) * 1000:,}"
        r = rng.random()
        if r < 0.45:
            return f"{sign}{rng.uniform(1, 999):,.2f}"
        if r < 0.75:
            return f"{sign}{rng.randint(10, 250_000):,}"
        if r < 0.9:
            return f"{sign}{rng.uniform(1, 99.9):.1f}k"
        return f"{sign}{rng.uniform(1, 9.9):.1f}M"

    def s_amount_ko(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return f"{self.rng.randint(1, 9000) * 1000:,}원"
        if r < 0.8:
            return f"{self.rng.randint(1, 999)}만 원"
        if r < 0.9:
            return f"{self.rng.randint(1, 9)}억 {self.rng.randint(1, 9)}천만 원"
        return f"₩{self.rng.randint(10, 99_999) * 100:,}"

    def s_cur(self) -> str:
        return self.pick("cur")

    def s_temp(self) -> str:
        c = self.rng.randint(-12, 36)
        return f"{c}°C" if self.rng.random() < 0.7 else f"{round(c * 9 / 5 + 32)}°F"

    def s_ver(self) -> str:
        v = f"{self.rng.randint(0, 14)}.{self.rng.randint(0, 30)}.{self.rng.randint(0, 20)}"
        return ("v" + v) if self.rng.random() < 0.4 else v

    def s_last4(self) -> str:
        return f"{self.rng.randrange(10_000):04d}"

    def s_room(self) -> str:
        return f"{self.rng.randint(1, 12)}{self.rng.randint(0, 3)}{self.rng.randint(1, 9)}"

    def s_gate(self) -> str:
        return f"{self.rng.choice('ABCDEFG')}{self.rng.randint(1, 48)}"

    def s_flight(self) -> str:
        return f"{self.pick('airline')} {self.rng.randint(1, 999):03d}" if self.rng.random() < 0.6 \
            else f"{self.pick('airline')}{self.rng.randint(1, 9999)}"

    def s_pnr(self) -> str:
        return "".join(self.rng.choice(_ALNUM_UP) for _ in range(4)) + str(self.rng.randint(10, 99))

    def s_vat(self) -> str:
        return self.pick("vat_cc") + str(self.rng.randint(10**8, 10**9))

    # ----------------------------------------------------------------- ids and hashes
    def s_order(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return (f"ORD-{self.rng.randint(10000, 99999)}-"
                    f"{self.rng.choice(_UPPER)}{self.rng.choice(_UPPER)}")
        if r < 0.8:
            return f"#{self.rng.randint(100000, 9999999)}"
        return f"{self.rng.randint(100, 999)}-{self.rng.randint(1000000, 9999999)}"

    def s_ticket(self) -> str:
        return f"{self.pick('ticket_prefix')}-{self.rng.randint(1, 9999)}"

    def s_invoice(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return f"INV-{self.today.year}-{self.rng.randint(1, 99999):05d}"
        return f"{self.rng.choice(_UPPER)}{self.rng.randint(100000, 999999)}"

    def s_uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def _hex(self, n: int) -> str:
        h = f"{self.rng.getrandbits(4 * n):0{n}x}"
        return h if _DIGIT.search(h) else "7" + h[1:]

    def s_sha7(self) -> str:
        return self._hex(7)

    def s_hash(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self._hex(40)
        if r < 0.7:
            return "sha256:" + self._hex(64)
        if r < 0.85:
            return self._hex(32)
        return self._hex(12)

    def s_token(self) -> str:
        raw = base64.urlsafe_b64encode(self.rng.randbytes(self.rng.randint(18, 36))).decode()
        raw = raw.rstrip("=")
        tok = self.pick("token_prefix") + raw
        return tok if _DIGIT.search(tok) else tok + "7"

    def s_ip(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            a, b = self.rng.randrange(256), self.rng.randrange(256)
            return f"10.{a}.{b}.{self.rng.randrange(1, 255)}"
        if r < 0.6:
            return f"192.168.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"
        return ".".join(str(self.rng.randrange(1, 255)) for _ in range(4))

    def s_port(self) -> str:
        return str(self.rng.choice((80, 443, 5432, 6379, 8000, 8080, 8443, 3000, 9000, 5000,
                                    self.rng.randint(1024, 65535))))

    def s_status_code(self) -> str:
        return str(self.rng.choice((200, 201, 204, 301, 302, 400, 401, 403, 404, 409, 422, 429,
                                    500, 502, 503, 504)))

    def s_id(self) -> str:
        return self.rng.choice((self.s_order, self.s_ticket, self.s_uuid, self.s_sha7,
                                self.s_invoice))()

    # ----------------------------------------------------------------- words and names
    def s_w(self) -> str:
        return self.content()

    def s_W(self) -> str:
        w = self.content()
        return w[:1].upper() + w[1:]

    def s_wz(self) -> str:
        ws = self.phrase(self.rng.randint(3, 9))
        s = " ".join(ws)
        return s[:1].upper() + s[1:] if self.rng.random() < 0.5 else s

    def s_kwz(self) -> str:
        t = self.t
        ws = self.rng.choices(t.ko_all, cum_weights=t.ko_all_cum, k=self.rng.randint(3, 7))
        return " ".join(ws)

    def s_kn(self) -> str:
        return self.ko_noun()

    def s_ident(self) -> str:
        r = self.rng.random()
        a, b = self.content(), self.content()
        if r < 0.55:
            return f"{a}_{b}"
        if r < 0.8:
            return a + b[:1].upper() + b[1:]
        return a

    def s_Ident(self) -> str:
        a, b = self.content(), self.content()
        return a[:1].upper() + a[1:] + (b[:1].upper() + b[1:] if self.rng.random() < 0.6 else "")

    def s_IDENT(self) -> str:
        return f"{self.content()}_{self.content()}".upper()

    def s_func(self) -> str:
        verb = self.pick("verb")
        n = self.content()
        return f"{verb}_{n}" if self.rng.random() < 0.5 else verb + n[:1].upper() + n[1:]

    def s_pstr(self) -> str:
        return '"' + self.s_path() + '"'

    def s_path(self) -> str:
        r = self.rng.random()
        parts = [self.content() for _ in range(self.rng.randint(1, 4))]
        ext = self.pick("ext")
        if r < 0.4:
            return "/" + "/".join(["srv", *parts]) + f".{ext}"
        if r < 0.7:
            return "/".join(parts) + f".{ext}"
        if r < 0.85:
            return f"/home/{self.pool('user')}/" + "/".join(parts)
        return "C:\\Users\\" + self.content() + "\\" + "\\".join(parts) + f".{ext}"

    def s_file(self) -> str:
        return f"{self.content()}_{self.content()}.py" if self.rng.random() < 0.6 \
            else f"{self.content()}.{self.pick('src_ext')}"

    def s_host(self) -> str:
        return (f"{self.content()}-{self.rng.randint(1, 40):02d}."
                f"{self.pick('env')}.{self.pick('tld')}")

    def s_code(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            inner = self.s_func() + "()"
        elif r < 0.5:
            inner = self.rng.choice(self.t.pylines)
        elif r < 0.65:
            inner = f"{self.s_ident()}={self.s_int()}"
        elif r < 0.8:
            inner = self.fill(self.pick("shell")).split("\n")[0][:60]
        elif r < 0.9:
            inner = f"{self.content()}.{self.content()}"
        else:
            inner = self.s_file()
        return f"`{inner}`"

    def s_errtype(self) -> str:
        return self.pick("errtype")

    def s_errmsg(self) -> str:
        return self.fill(self.pick("errmsg"))

    def s_lang(self) -> str:
        return self.pick("lang")

    def s_lang_stack(self) -> str:
        return ", ".join(self.rng.sample(self.tpl["lang"], 3))

    def s_status(self) -> str:
        return self.pick("status")

    def s_prio(self) -> str:
        return self.pick("prio")

    def s_name(self) -> str:
        return self.pool("name_ko") if self.korean and self.rng.random() < 0.6 \
            else self.pool("name_en")

    def s_name_ko(self) -> str:
        return self.pool("name_ko")

    def s_first(self) -> str:
        return self.rng.choice(self.t.first_en) if not self.korean or self.rng.random() < 0.4 \
            else self.pool("name_ko")[1:]

    def s_company(self) -> str:
        return self.pool("company_en")

    def s_company_ko(self) -> str:
        return self.pool("company_ko")

    def s_address(self) -> str:
        return self.pool("address_en")

    def s_address_ko(self) -> str:
        return self.pool("address_ko")

    def s_city(self) -> str:
        return self.pool("city_en") if self.rng.random() < 0.7 else self.pick("big_city")

    def s_city_ko(self) -> str:
        return self.pool("city_ko")

    def s_email(self) -> str:
        return self.pool("email")

    def s_url(self) -> str:
        r = self.rng.random()
        if r < 0.55:
            return self.pool("url")
        if r < 0.85:
            slug = "-".join(self.content() for _ in range(self.rng.randint(1, 4)))
            return f"https://{self.pool('domain')}/{self.content()}/{slug}"
        q = "&".join(f"{self.content()}={self._hex(self.rng.randint(4, 12))}"
                     for _ in range(self.rng.randint(1, 4)))
        return f"https://{self.pool('domain')}/{self.content()}?{q}"

    def s_domain(self) -> str:
        return self.pool("domain")

    def s_phone(self) -> str:
        return self.pool("phone_en")

    def s_phone_ko(self) -> str:
        return self.pool("phone_ko")

    def s_user(self) -> str:
        return self.pool("user")

    def s_job(self) -> str:
        return self.pool("job_ko") if self.korean else self.pool("job_en")

    def s_product(self) -> str:
        return self.pool("product_en")

    def s_acro(self) -> str:
        return self.pick("acro")

    def s_city_any(self) -> str:
        return self.s_city_ko() if self.korean else self.s_city()

    def s_long(self) -> str:
        """A long unbroken token that forces a hard wrap."""
        r = self.rng.random()
        if r < 0.3:
            q = "&".join(f"{self.content()}={self._hex(self.rng.randint(8, 24))}"
                         for _ in range(self.rng.randint(4, 8)))
            return f"https://{self.pool('domain')}/{self.content()}/{self.content()}?{q}"
        if r < 0.5:
            return self._hex(128)
        if r < 0.7:
            return self.s_token() + self.s_token()
        if r < 0.85:
            return "/".join(["", *(self.content() for _ in range(self.rng.randint(6, 12)))]) + ".py"
        return "".join(self.content() for _ in range(self.rng.randint(5, 9)))

    # ----------------------------------------------------------------- prose
    def en_sentence(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            s = self.fill(self.pick("sentence"))
        elif r < 0.9:
            n = self.rng.randint(4, 22)
            ws = self.phrase(n) if self.rng.random() < 0.85 else self.words(n)
            n = len(ws)
            for i in range(2, n - 1):
                if self.rng.random() < 0.07:
                    ws[i] += ","
            if self.rng.random() < 0.25:
                ws.insert(self.rng.randrange(1, n), self.rng.choice(
                    (self.s_name, self.s_date, self.s_amount, self.s_int, self.s_W,
                     self.s_code, self.s_pct, self.s_acro, self.s_city, self.s_id))())
            if self.rng.random() < 0.08:
                i = self.rng.randrange(n)
                ws[i] = ws[i][:1].upper() + ws[i][1:]
            end = self.rng.choices((".", "?", "!", ":", "…", ";"), (80, 9, 4, 3, 1, 1))[0]
            s = " ".join(ws) + end
        else:
            s = self.s_wz() + " (" + self.rng.choice(
                (self.s_email, self.s_url, self.s_ticket, self.s_phone, self.s_date))() + ")."
        if self.rng.random() < 0.012:
            s += " " + self.s_long()
        if self.rng.random() < 0.004:
            s += " " + self.pick("emoji")
        return s[:1].upper() + s[1:]

    def ko_sentence(self) -> str:
        r = self.rng.random()
        if r < 0.45:
            s = self.fill(self.pick("ko_sentence"))
        elif r < 0.6:
            s = self.fill(self.pick("mixed"))
        else:
            n = self.rng.randint(3, 10)
            ws: list[str] = []
            for _ in range(n):
                w = self.ko_noun() if self.rng.random() < 0.7 else \
                    self.rng.choices(self.t.ko_all, cum_weights=self.t.ko_all_cum)[0]
                if self.rng.random() < 0.45:
                    w = _josa(w, self.rng.choice(tuple(_PARTICLES)))
                ws.append(w)
            if self.rng.random() < 0.25:
                ws.insert(self.rng.randrange(n), self.rng.choice(
                    (self.s_w, self.s_acro, self.s_int, self.s_amount_ko, self.s_date_ko,
                     self.s_code, self.s_ticket))())
            s = " ".join(ws) + " " + self.pick("ko_end")
        return s

    def sentence(self) -> str:
        return self.ko_sentence() if self.korean else self.en_sentence()

    def paragraph(self, lo: int = 1, hi: int = 5) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(lo, hi)))

    # ----------------------------------------------------------------- blocks
    def bullets(self) -> str:
        n = self.rng.randint(2, 7)
        numbered = self.rng.random() < 0.35
        mark = self.rng.choice(("-", "-", "*", "•"))
        out = []
        for i in range(n):
            item = self.fill(self.pick("bullet")) if self.rng.random() < 0.55 else self.sentence()
            if self.korean and self.rng.random() < 0.6:
                item = self.ko_sentence()
            prefix = f"{i + 1}." if numbered else mark
            out.append(f"{prefix} {item}")
            if self.rng.random() < 0.1:
                out.append(f"   {self.rng.choice(('-', '*'))} {self.fill(self.pick('bullet'))}")
        return "\n".join(out)

    def table(self) -> str:
        spec = [c.split(":") for c in self.pick("table").split("|")]
        rows = self.rng.randint(2, 7)
        head = "| " + " | ".join(h for h, _ in spec) + " |"
        sep = "|" + "|".join("---" if self.rng.random() < 0.8 else ":---:" for _ in spec) + "|"
        body = []
        for _ in range(rows):
            cells = []
            for _, kind in spec:
                fn = _SLOTS[kind]
                cell = fn(self)
                if kind == "wz":
                    cell = " ".join(cell.split()[:4])
                cells.append(cell)
            body.append("| " + " | ".join(cells) + " |")
        return "\n".join([head, sep, *body])

    def codeblock(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            lang, body = "python", self.rng.choice(self.t.src.code)
        elif r < 0.65:
            lang, body = "python", self.fill(self.pick("pyt"))
        elif r < 0.8:
            lang, body = "javascript", self.fill(self.pick("js"))
        elif r < 0.9:
            lang, body = "sql", self.fill(self.pick("sql"))
        else:
            lang, body = "bash", "\n".join(
                "$ " + self.fill(self.pick("shell")) for _ in range(self.rng.randint(1, 4)))
        r = self.rng.random()
        tag = lang if r < 0.75 else ("" if r < 0.9 else _FENCE_ALIAS.get(lang, lang))
        return f"```{tag}\n{body}\n```"

    def s_codeblock(self) -> str:
        return self.codeblock()

    def s_sqlblock(self) -> str:
        return f"```sql\n{self.fill(self.pick('sql'))}\n```"

    def s_shellblock(self) -> str:
        lines = [f"$ {self.fill(self.pick('shell'))}" for _ in range(self.rng.randint(1, 3))]
        lines.append(f"{self.pick('errtype')}: {self.s_errmsg()}")
        return "\n".join(lines)

    def s_traceback(self) -> str:
        frames = []
        for _ in range(self.rng.randint(1, 4)):
            frames.append(f'  File "{self.s_path()}", line {self.rng.randint(1, 900)}, '
                          f"in {self.s_func()}")
            frames.append("    " + self.rng.choice(self.t.pylines))
        return "\n".join(["Traceback (most recent call last):", *frames,
                          f"{self.pick('errtype')}: {self.s_errmsg()}"])

    def s_logs(self) -> str:
        ts = _dt.datetime(self.today.year, self.today.month, self.today.day,
                          self.rng.randrange(24), self.rng.randrange(60), self.rng.randrange(60))
        out = []
        for _ in range(self.rng.randint(2, 8)):
            ts += _dt.timedelta(milliseconds=self.rng.randint(1, 90_000))
            stamp = ts.isoformat(timespec="milliseconds") + "Z"
            worker = f"{self.content()}-{self.rng.randint(1, 9)}"
            out.append(f"{stamp} {self.pick('level'):<5} [{worker}] {self.fill(self.pick('log'))}")
        return "\n".join(out)

    def s_csv(self) -> str:
        spec = [c.split(":") for c in self.pick("table").split("|")]
        lines = [",".join(h.lower().replace(" ", "_") for h, _ in spec)]
        for _ in range(self.rng.randint(2, 8)):
            vals = []
            for _, kind in spec:
                v = _SLOTS[kind](self)
                if "," in v:
                    v = '"' + v.replace('"', '""') + '"'
                vals.append(v)
            lines.append(",".join(vals))
        return "\n".join(lines)

    def tool_output(self) -> str:
        keys = self.tpl["json_key"]
        d: dict[str, object] = {}
        for k in self.rng.sample(keys, self.rng.randint(3, 7)):
            d[k] = {
                "id": self.s_id(), "status": self.pick("status"),
                "amount": round(self.rng.uniform(1, 5000), 2),
                "created_at": self.s_isodate() + "T" + f"{self.rng.randrange(24):02d}:"
                f"{self.rng.randrange(60):02d}:00Z",
                "email": self.s_email(), "items": self.rng.randint(1, 40),
                "total": self.rng.randint(0, 100_000), "currency": self.pick("cur"),
                "name": self.s_name(), "url": self.s_url(), "count": self.rng.randint(0, 999),
                "error": None if self.rng.random() < 0.7 else self.s_errmsg(),
            }[k]
        if self.rng.random() < 0.3:
            d[self.s_ident()] = self.content()
        indent = 2 if self.rng.random() < 0.5 else None
        return json.dumps(d, ensure_ascii=False, indent=indent)

    # ----------------------------------------------------------------- turns
    def user_turn(self, first: bool, topic: str) -> str:
        r = self.rng.random()
        if self.korean:
            if first or r < 0.5:
                return self.fill(self.pick("ko_open"))
            if r < 0.75:
                return self.pick("ko_short")
            return self.paragraph(1, 3)
        if first:
            s = self.fill(self.pick(topic))
            return s + (" " + self.paragraph(1, 3) if self.rng.random() < 0.4 else "")
        if r < 0.2:
            return self.pick("short_user")
        if r < 0.5:
            return self.fill(self.pick("ask"))
        if r < 0.65:
            return self.fill(self.pick(self.rng.choice(_TOPICS)))
        if r < 0.9:
            return self.paragraph(1, 4)
        return self.paragraph(1, 3) + "\n\n" + self.rng.choice(
            (self.s_codeblock, self.s_traceback, self.s_logs, self.s_csv))()

    def assistant_turn(self) -> str:
        rng = self.rng
        ko = self.korean
        r = rng.random()
        intro = self.fill(self.pick("ko_intro" if ko else "intro"))
        if r < 0.25:
            body = self.paragraph(1, 3)
            return intro + " " + body if rng.random() < 0.6 else body
        parts = [intro + (" " + self.paragraph(0, 2) if rng.random() < 0.5 else "")]
        # medium (1–2 sections), long (2–5) and very long (5–9) answers
        n_sections = rng.randint(1, 2) if r < 0.65 else (
            rng.randint(2, 5) if r < 0.92 else rng.randint(5, 9))
        for _ in range(n_sections):
            if rng.random() < 0.55:
                title = self.fill(self.pick("ko_title" if ko else "title"))
                style = rng.random()
                if style < 0.45:
                    parts.append(f"{rng.choice(('##', '###', '#'))} {title}")
                elif style < 0.8:
                    parts.append(f"**{title}**")
                else:
                    parts.append(f"{title}:")
            k = rng.random()
            if k < 0.35:
                parts.append(self.paragraph(1, 5))
            elif k < 0.62:
                parts.append(self.bullets())
            elif k < 0.76:
                parts.append(self.paragraph(3, 7))
            elif k < 0.87:
                parts.append(self.codeblock())
            elif k < 0.95:
                parts.append(self.table())
            else:
                parts.append("> " + self.sentence())
        if rng.random() < 0.6:
            parts.append(self.fill(self.pick("ko_close" if ko else "close")))
        return "\n\n".join(parts) if rng.random() < 0.85 else "\n".join(parts)


_FENCE_ALIAS = {"python": "py", "javascript": "js", "bash": "sh", "sql": "sql"}

_TOPICS: tuple[str, ...] = ("open_planning", "open_debug", "open_travel", "open_finance",
                            "open_support", "open_data", "open_writing", "open_ops")

_SLOTS: dict[str, Callable[[_Gen], str]] = {
    name[2:]: fn for name, fn in vars(_Gen).items() if name.startswith("s_") and callable(fn)
}
_SLOTS.update({"kn": _Gen.s_kn})


def _conversation(g: _Gen) -> list[TurnText]:
    rng = g.rng
    lang = rng.random()
    mixed = 0.76 <= lang < 0.88
    g.korean = lang >= 0.88
    topic = rng.choice(_TOPICS)
    ts = float(rng.randrange(1_546_300_800, 1_798_761_600))
    turns: list[TurnText] = []
    if rng.random() < 0.12:
        turns.append(TurnText("system", g.fill(g.pick("system")), ts))
    n = min(2 + int(rng.expovariate(1 / 9)), 60)
    for i in range(n):
        if mixed:
            g.korean = rng.random() < 0.5
        ts += rng.choice((rng.uniform(4, 90), rng.uniform(30, 900), rng.uniform(600, 172_800)))
        if i % 2 == 0:
            turns.append(TurnText("user", g.user_turn(i == 0, topic), ts))
        else:
            turns.append(TurnText("assistant", g.assistant_turn(), ts))
            if rng.random() < 0.07:
                ts += rng.uniform(0.2, 5)
                turns.append(TurnText("tool", g.tool_output(), ts))
                ts += rng.uniform(0.5, 20)
                turns.append(TurnText("assistant", g.paragraph(1, 3), ts))
    return turns


# =========================================================================== public API


def generate_conversation(
    rng_or_seed: random.Random | int,
    split: Split,
    *,
    data_dir: Path | str | None = None,
) -> list[TurnText]:
    """One synthetic conversation (2–60 turns, sometimes a system or tool turn).

    The same seed and split always give the same turns (given the same sources).

    >>> turns = generate_conversation(3, "train")       # doctest: +SKIP
    >>> {t.role for t in turns} <= {"system", "user", "assistant", "tool"}   # doctest: +SKIP
    True
    """
    rng = rng_or_seed if isinstance(rng_or_seed, random.Random) else \
        random.Random(f"{split}:{rng_or_seed}")
    return _conversation(_Gen(rng, _tables(load_sources(split, data_dir))))


def conversations(seed: int, split: Split, *,
                  data_dir: Path | str | None = None) -> Iterator[list[TurnText]]:
    """An endless, seeded stream of conversations."""
    rng = random.Random(f"{split}:stream:{seed}")
    tables = _tables(load_sources(split, data_dir))
    while True:
        yield _conversation(_Gen(rng, tables))


def page_stream(
    seed: int,
    split: Split,
    settings: RenderSettings | None = None,
    *,
    partial_rate: float = 0.25,
    data_dir: Path | str | None = None,
    pseudo_rate: float = 0.0,
    symbol_rate: float = 0.0,
) -> Iterator[PageLayout]:
    """An endless, seeded stream of page layouts, packed the way the memory packs turns.

    Each conversation is laid out and cut into pages by :func:`~opticmem.render.paginate`;
    every complete page is yielded, and the last, partial page with probability
    ``partial_rate`` so lighter pages are represented too. ``pseudo_rate`` replaces that
    share of words by :func:`pseudo_words` and ``symbol_rate`` that share of punctuation
    and symbols by :func:`pseudo_symbols` (training only; layouts are unchanged).

    >>> page = next(page_stream(0, "train"))               # doctest: +SKIP
    >>> len(page.lines) <= page.settings.rows              # doctest: +SKIP
    True
    """
    rates = {"partial_rate": partial_rate, "pseudo_rate": pseudo_rate, "symbol_rate": symbol_rate}
    for name, rate in rates.items():
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}")
    settings = settings or RenderSettings()
    rng = random.Random(f"{split}:pages:{seed}")
    words = random.Random(f"{split}:pseudo:{seed}")
    symbols = random.Random(f"{split}:symbols:{seed}")
    for turns in conversations(seed, split, data_dir=data_dir):
        if pseudo_rate:
            turns = [replace(t, text=pseudo_words(t.text, words, pseudo_rate)) for t in turns]
        if symbol_rate:
            turns = [replace(t, text=pseudo_symbols(t.text, symbols, symbol_rate))
                     for t in turns]
        pages = paginate([layout_turn(t, settings) for t in turns], settings)
        for page in pages:
            if page.complete or rng.random() < partial_rate:
                yield page


def _timestamp(value: object) -> float | None:
    """A JSON line's ``ts`` as Unix seconds: a number, or an ISO 8601 string (UTC when it
    has no offset), as ``opticmem ingest`` takes it; ``ValueError`` for anything else."""
    if value is None:
        return None
    if isinstance(value, str):
        return iso_seconds(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"ts must be a number or an ISO 8601 string, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int of hundreds of digits: not its repr, past 4,300 a ValueError
        raise ValueError("ts is out of range: an integer too large to be Unix seconds") from None


def _first_line_is_json_object(text: str) -> bool:
    """True when the first non-blank line of ``text`` parses as a JSON object: a file of
    JSON lines under another name. Text that merely starts with ``{`` (code, a
    pretty-printed JSON document) is plain text."""
    first = next((line for line in text.split("\n") if line.strip()), "")
    if not first.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except (ValueError, RecursionError):
        return False


def read_turns(path: Path | str) -> list[TurnText]:
    """Turns from a user's file: JSON lines of ``{"role", "text"[, "ts"]}`` (``ts`` in Unix
    seconds or ISO 8601, as ``opticmem ingest`` takes it), a transcript
    with ``User:``/``Assistant:`` labels at line starts, or plain text (one user turn).

    A file not named ``.jsonl`` or ``.ndjson`` is read as JSON lines when its first
    non-blank line is a JSON object. Turns with no visible text (only whitespace, or
    invisible characters such as U+200B) are left out, so an empty file, or one of nothing
    visible, has no turns (and no pages to evaluate). Raises ``ValueError`` naming the line
    of a JSON line that is not an object with a string ``text`` (and, if given, a string
    ``role``; or is nested too deeply to parse),
    and ``UnicodeDecodeError`` for a file that is not UTF-8."""
    path = Path(path)
    # utf-8-sig: a leading byte order mark (as Windows tools write UTF-8) is the
    # encoding's signature, not text before the first "{" or label.
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix in (".jsonl", ".ndjson") or _first_line_is_json_object(text):
        turns = []
        # Only a newline ends a JSON line: str.splitlines() would also cut at U+2028,
        # U+2029 and U+0085, which JSON strings may hold raw (json.dumps with
        # ensure_ascii=False writes them so). Reading in text mode made CRLF a "\n".
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                if not isinstance(d, dict):
                    raise TypeError(f"got {type(d).__name__}")
                role, body = d.get("role", "user"), d["text"]
                # As ingest takes them: str() made null the text "None" and 123 "123",
                # pages of words the file never held, scored as if it did.
                for name, value in (("text", body), ("role", role)):
                    if not isinstance(value, str):
                        raise TypeError(f"{name} must be a string, got {json.dumps(value)}")
                turns.append(TurnText(role, body, _timestamp(d.get("ts"))))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: expected a JSON object with 'text': {exc}") from exc
            except RecursionError:  # brackets nested thousands deep: a bare crash otherwise
                raise ValueError(f"{path}:{n}: expected a JSON object with 'text': "
                                 "JSON nested too deeply") from None
        return [t for t in turns if has_visible_text(t.text)]
    label = re.compile(r"^(User|Assistant|System|Tool): ?", re.MULTILINE)
    marks = list(label.finditer(text))
    if not marks or marks[0].start() != 0:
        return [TurnText("user", text.rstrip("\n"))] if has_visible_text(text) else []
    out = []
    for m, nxt in zip(marks, [*marks[1:], None], strict=True):
        body = text[m.end(): nxt.start() if nxt else len(text)].rstrip("\n")
        if has_visible_text(body):  # strip() keeps U+200B: a page reading just "User:"
            out.append(TurnText(m.group(1).lower(), body))
    return out


def text_file_pages(path: Path | str, settings: RenderSettings | None = None) -> list[PageLayout]:
    """Every page (the last may be partial) of a user's text file, for evaluation."""
    settings = settings or RenderSettings()
    return paginate([layout_turn(t, settings) for t in read_turns(path)], settings)


def page_texts(turns: Sequence[TurnText], settings: RenderSettings | None = None) -> list[str]:
    """The transcripts of the pages a conversation fills (what a codec must read)."""
    settings = settings or RenderSettings()
    return [p.transcript for p in paginate([layout_turn(t, settings) for t in turns], settings)]

"""Ticket texts for scripts/make_example_input.py, by label, with {placeholders}.

SHORT texts stay under 35 words and ORDINARY bodies run one or two paragraphs. Neither uses
the routing heuristic's keywords (see batcher/spec.py HIGH_KEYWORDS and LOW_KEYWORDS, which
match inside words too: "information" holds "format"), so a ticket's tier comes from the
instruction the generator puts in front of it, as intended.
"""

SHORT = {
    "billing_dispute": [
        "You charged my card twice on {date}, ${amount} each time. Please put it right.",
        "We are on {plan} with {seats} seats but the last charge was for more seats than that.",
        "There is a ${amount} charge from Tallyworks on our statement that nobody here recognises.",
        "We cancelled last month and you still took ${amount} on {date}. Not acceptable.",
        "Charged ${amount} but the pricing page says {plan} costs less. Which is right?",
    ],
    "refund_request": [
        "Forgot to cancel before the renewal on {date}. Could we get the ${amount} back?",
        "I bought the annual plan by mistake, meant monthly. Can you refund the difference?",
        "We paid for {seats} seats and only ever used two. Any chance of a partial refund?",
        "The business closed last month. Please refund this month's ${amount} if you can.",
    ],
    "payment_failed": [
        "Card ending {card} was declined for the renewal but the bank says all is fine.",
        "Account shows suspended for non-payment. How do I pay and get back in today?",
        "I try to update our card and the page just says payment method could not be saved.",
        "Our bank transfer for {invoice} bounced. What details should we use instead?",
    ],
    "invoice_request": [
        "Please resend invoice {invoice}, our accountant cannot find it.",
        "Can you add our VAT number {vat} to invoice {invoice}?",
        "We need all of this year's Tallyworks invoices as PDFs for the audit.",
        "Please send future invoices to {email} instead of my personal address.",
        "Our company name changed to {company}. Can the invoices show the new name?",
    ],
    "plan_change": [
        "Please add {seats} more seats to our account from today.",
        "We want to move from {plan} to {other_plan} at the next renewal.",
        "Can we switch from monthly to annual billing and keep our data?",
        "Two people left, please remove two paid seats.",
    ],
    "cancellation": [
        "Please cancel our subscription at the end of this billing period.",
        "We have moved to another tool. Cancel the account and stop all charges.",
        "I want to close my Tallyworks account. What happens to my invoices?",
    ],
    "login_issue": [
        "Password reset email never arrives. Checked spam too.",
        "New phone, authenticator codes no longer work, I am locked out.",
        "SSO sign-in through Okta fails with an error since this morning.",
        "It says too many attempts and will not let me try again.",
    ],
    "user_management": [
        "How do I invite our new bookkeeper as an accountant, not an admin?",
        "An ex-employee can still sign in. Please remove her access now.",
        "The owner of our account left the company. Can ownership move to me?",
        "A member on my team can see all invoices. Can I limit that?",
    ],
    "data_privacy": [
        "Please delete all personal data you hold about me.",
        "Under GDPR I request a copy of my personal data.",
        "Where are our client records stored, EU or US?",
        "We need a signed data processing agreement before our audit.",
    ],
    "bug_report": [
        "Invoice PDF cuts off the last line item when there are more than {n} lines.",
        "Payment reminders went out a day early for {n} clients.",
        "The Save button on the invoice page does nothing in {browser}.",
        "Tax total on invoice {client_invoice} is off by a few cents.",
    ],
    "outage": [
        "Nothing loads, every page gives a 503. Whole team is blocked.",
        "Tallyworks is down for us since 9am, none of us can sign in or send invoices.",
        "All payment pages error for our clients right now.",
    ],
    "performance": [
        "Dashboard takes over {minutes} minutes to load today.",
        "The aging report times out every time now.",
        "Exporting {n} invoices to CSV has been running for an hour.",
    ],
    "integration_issue": [
        "{integration} sync stopped on {date}, nothing new has gone across since.",
        "Webhook signature check fails on every event since yesterday.",
        "POST {endpoint} returns 429 after a few calls, well under the documented limit.",
        "Payments show twice in {integration} after the last sync.",
    ],
    "feature_request": [
        "Could invoices support a second currency line for our EU clients?",
        "Please add recurring invoices that skip weekends.",
        "It would help a lot to schedule payment reminders per client.",
        "Any plan to support Apple Pay on the payment page?",
    ],
    "how_to": [
        "How do I add a late fee to overdue invoices?",
        "Where do I change the logo on my invoices?",
        "How can a client pay by bank transfer instead of card?",
        "Is there a way to send one invoice to two email addresses?",
    ],
    "other": [
        "Just wanted to say thanks, the new mobile app is great.",
        "Are you hiring support staff in Lisbon?",
        "Hello, is this the right place to ask about a partnership?",
    ],
}

SUBJECTS = {
    "billing_dispute": ["Wrong charge", "Double charge on {date}", "Charge after cancelling"],
    "refund_request": ["Refund for renewal", "Refund request", "Annual plan by mistake"],
    "payment_failed": ["Card declined", "Account suspended", "Cannot update payment method"],
    "invoice_request": ["Invoice {invoice}", "VAT number on invoices", "Invoices for our audit"],
    "plan_change": ["More seats", "Change of plan", "Annual billing"],
    "cancellation": ["Cancel subscription", "Closing our account"],
    "login_issue": ["Locked out", "Cannot sign in", "Two-factor problem"],
    "user_management": ["Remove a user", "Account owner left", "Team roles"],
    "data_privacy": ["Data deletion request", "GDPR request", "Where is our data stored?"],
    "bug_report": ["Invoice PDF problem", "Reminders sent on the wrong day", "Save does nothing"],
    "outage": ["Tallyworks down?", "503 on every page", "Nobody can work"],
    "performance": ["Very slow dashboard", "Report timing out", "Export never finishes"],
    "integration_issue": ["{integration} sync broken", "Webhooks failing", "API 429 errors"],
    "feature_request": ["Suggestion", "Feature idea", "Request for recurring invoices"],
    "how_to": ["Question", "How do I ...", "Quick question about invoices"],
    "other": ["Hello", "Partnership", "Thank you"],
}  # fmt: skip

ORDINARY = {
    "billing_dispute": [
        "Our statement shows two charges from Tallyworks on {date}, both for ${amount}. We only "
        "have one account and one subscription, so one of these has to be a mistake. Our "
        "finance lead noticed it when closing the month. Can you look into it and put the "
        "second charge back on card ending {card}? We have been happy customers for two years.",
        "We moved from {plan} to {other_plan} a few weeks ago and the support agent told us the "
        "price difference would be prorated. Instead the renewal charge on {date} was the full "
        "${amount} of the old plan plus the new one. I have the chat transcript if that helps. "
        "Please correct the charge; if it is not sorted this week we will raise a chargeback "
        "with our bank.",
        "I cancelled our subscription on the settings page last month and got the confirmation "
        "email, yet you charged ${amount} again on {date}. We have not signed in since. I would "
        "like this charge reversed and confirmation that nothing more will be taken. My "
        "lawyer has advised me to keep a record of every email about it.",
    ],
    "refund_request": [
        "Our plan renewed on {date} for ${amount}. That is entirely on us: we meant to cancel "
        "before the renewal because we are winding down the business at the end of the year, "
        "and it slipped through. Would you consider refunding this renewal? We have not used "
        "the account since and are happy for you to close it.",
        "Last quarter we bought {seats} extra seats for a project that was then cancelled. The "
        "seats were never assigned to anyone. I understand the charge was correct, but we "
        "would really appreciate a refund of the unused seats, or a credit towards next year "
        "if a refund is not possible.",
    ],
    "payment_failed": [
        "Our renewal failed twice this week. The card ending {card} is valid, has plenty of "
        "room on it, and the bank says they did not see any attempt from you. Now the account "
        "banner says we will be suspended in three days. Is something wrong on your side? I "
        "can pay by bank transfer if that is quicker.",
        "I tried to replace our expired company card on the billing page. After I enter the "
        "new card and press save, the page reloads and the old card is still there, with no "
        "message at all. I tried two different cards and {browser}. Our subscription is due on "
        "{date} and I do not want the team to lose access.",
    ],
    "invoice_request": [
        "Our auditors need every Tallyworks invoice for the last financial year, with our "
        "registered company name {company} and VAT number {vat} on them. The invoices we have "
        "show our old trading name and no VAT number. Could you reissue them, or tell me where "
        "in the app I can download corrected copies?",
        "Could you send invoice {invoice} to {email}? Our accounts payable team only processes "
        "invoices that arrive at that address, and the original went to my personal inbox. "
        "While you are at it, please change the billing contact so future invoices go there "
        "too. Our purchase order number is PO-{card}, please add it if you can.",
    ],
    "plan_change": [
        "We have hired {seats} new people in the sales team and they all need to send invoices "
        "from next Monday. Please add the seats to our {plan} plan. We would also like to know "
        "whether switching to annual billing now would lower the per-seat price, and how the "
        "change would show up on the next invoice.",
        "Our needs have grown and we want to move from {plan} to {other_plan}. Can the change "
        "happen today rather than at renewal, and will our existing invoices, clients and "
        "payment settings stay exactly as they are? I want to avoid any downtime for the team "
        "in the middle of our busy month.",
    ],
    "cancellation": [
        "After three years we have decided to move our invoicing into our new accounting "
        "suite, so we will not need Tallyworks after this month. Please cancel the "
        "subscription at the end of the current period. Before you do, how long will we be "
        "able to download our old invoices and payment history?",
        "Please close our account. The company is being sold and the new owners use a "
        "different system. I am the account owner. Let me know if you need anything from me "
        "to confirm, and please make sure no further charges are taken from card ending {card}.",
    ],
    "login_issue": [
        "I changed phones over the weekend and did not move my authenticator app. Now "
        "Tallyworks asks for a six-digit code at every sign-in and I have no way to get one. I "
        "also cannot find the backup codes. I am the account owner and our invoices for the "
        "month need to go out today. How can I get back in?",
        "Since this morning our SSO sign-in through Azure AD fails with an error that says the "
        "assertion is not valid. Nothing changed on our side as far as I know. Sign-in with a "
        "password is disabled for our team, so nobody in finance can get in. There are {n} "
        "people affected.",
        "Someone tried to reset my password three times last night; I got the emails but did "
        "not ask for them. This morning there was also a sign-in from a city I have never "
        "been to. Please check whether my account has been accessed and lock it if needed.",
    ],
    "user_management": [
        "Our previous bookkeeper left the company in the summer, but I just noticed her "
        "account is still active and she signed in last week. I am an admin but I cannot see "
        "a way to remove her. Please remove her access straight away and tell me how to do "
        "this myself next time.",
        "The owner of our Tallyworks account was our co-founder, who has now left the "
        "business and does not reply to emails. I run the finance side and need to become the "
        "owner so I can manage billing and users. What do you need from me to transfer "
        "ownership of the account for {company}?",
    ],
    "data_privacy": [
        "I used to be a client of one of your customers and received invoices through "
        "Tallyworks. Under the GDPR I ask you to erase all personal data you hold about me, "
        "including my email address and payment history, and to confirm in writing once that "
        "is done. Please tell me which of your customers shared my details.",
        "Our legal team needs to know where Tallyworks stores our clients' personal data, "
        "which subprocessors you use, and whether you can sign our data processing agreement "
        "before the end of the month. We are an EU company and our clients are mostly in "
        "Germany and France.",
    ],
    "bug_report": [
        "When an invoice has more than {n} line items, the PDF that our clients receive cuts "
        "off the last line and the total at the bottom of the page. The invoice looks fine in "
        "the app. It happens in {browser} and when the invoice is sent by email. Invoice "
        "{client_invoice} is an example.",
        "Payment reminders that should go out seven days after the due date went out on the "
        "due date itself for {n} of our clients yesterday. Several clients complained that "
        "we chased them before the invoice was even late. The reminder settings have not been "
        "touched in months.",
        "The tax line on invoice {client_invoice} shows a total a few cents higher than the "
        "sum of the tax on each line. Our accountant flagged it because the amounts no longer "
        "match what we file. It seems to happen only when a discount is applied to a line.",
    ],
    "outage": [
        "Since about 9am none of us can use Tallyworks. The app shows a blank page and then an "
        "error 503, on every browser and on the mobile app too. Our clients also tell us the "
        "payment links in their invoices show an error. This is month end, so please tell us "
        "when it will be back.",
        "Every action in the app fails for all {n} people in our team: creating invoices, "
        "opening clients, even the settings page. Sign-in works, but then every page shows "
        "something went wrong. Your status page says all systems are working, which they are "
        "clearly not for us.",
    ],
    "performance": [
        "The dashboard has become very slow over the last two weeks. It now takes {minutes} "
        "minutes to load, where it used to open in a couple of seconds. Other pages are fine. "
        "We have about {n} thousand invoices in the account, if that matters. It is the same "
        "in {browser} and on different laptops.",
        "Exporting our invoices to CSV for the accountant has become painfully slow. The export "
        "of last year has been running for over an hour and the progress bar has not moved. "
        "Smaller exports of a month or two still finish, just slowly. Nothing fails, it just "
        "never ends.",
    ],
    "integration_issue": [
        "The {integration} connection stopped syncing on {date}. Invoices created in Tallyworks "
        "since then do not appear in {integration}, and payments are missing too. The "
        "connection page still says connected. I tried disconnecting and connecting again, "
        "and now it asks me to sign in every time I open the page.",
        "Our backend creates invoices through POST {endpoint}. Since yesterday about one call "
        "in five returns HTTP 429 even though we send fewer than {n} requests a minute, well "
        "under the documented limit. Request {req_id} is one example. Did the limits change?",
        "Webhook deliveries to our endpoint started failing signature verification yesterday. "
        "We use the secret from the developer settings page and our code has not changed. "
        "Deliveries of invoice.paid events are now retried until they give up, so our system "
        "misses payments.",
    ],
    "feature_request": [
        "We invoice clients in Ireland and the UK and would love invoices that show the amount "
        "in both euros and pounds, with the exchange rate used. Right now we add a note by "
        "hand on each invoice. Is this on the roadmap? It would save our team a lot of time "
        "every month.",
        "It would help us a great deal if payment reminders could be set per client instead of "
        "for the whole account. Some of our large clients pay on sixty-day terms and get "
        "reminders they do not need, while small clients need a nudge after a week.",
    ],
    "how_to": [
        "We want to charge a late fee of two percent on invoices that are more than thirty "
        "days overdue. I looked through the invoice settings and the help centre but could "
        "not find where to set this up. Is it possible, and if so, where do I turn it on?",
        "One of our clients wants every invoice to go to both their accounts team and their "
        "project manager. Is there a way to add a second email address to a client, so that "
        "both get the invoice and the reminders? I would rather not create the client twice.",
    ],
    "other": [
        "Hello, I run a small agency that builds online shops, and several of our customers "
        "use Tallyworks. We would like to talk to someone about a referral partnership. Who "
        "is the right person to contact? Happy to set up a call at a time that suits you.",
        "No problem to report, I just wanted to thank Marta from your support team, who "
        "helped us last week with our move from the old system. She was patient and quick, "
        "and the whole team noticed. Please pass it on.",
    ],
}

AGENT_REPLIES = [
    "Hi {first}, thanks for getting in touch. I have passed this to the right team and they "
    "will come back to you within one working day. Is there anything else we can help with in "
    "the meantime?",
    "Hello {first}, sorry for the trouble. Could you send us the invoice number or a screenshot "
    "so we can look into it? We will update you as soon as we know more.",
    "Thanks {first}, we are looking into this now. I have added a note to your account so "
    "whoever picks it up has the full history.",
]

# A pasted log, in order, after a developer's report: it shows several errors at once, so
# the label has to come from what the customer asks.
LOGS = [
    "2026-11-24T09:14:02Z INFO worker-3 sync.start account={company} integration={integration}",
    "2026-11-24T09:14:03Z WARN http POST {endpoint} status=429 request_id={req_id} retry_in=30s",
    "2026-11-24T09:14:33Z WARN http POST {endpoint} status=429 request_id={req_id} retry_in=60s",
    "2026-11-24T09:15:34Z ERROR sync.batch failed items={n} cause=timeout after 30000ms",
    "2026-11-24T09:15:35Z INFO webhook.deliver event=invoice.paid attempt=3 status=401",
    "2026-11-24T09:15:36Z ERROR webhook.verify signature mismatch header=t=1732439735,v1=9f2c",
    "2026-11-24T09:16:10Z INFO ui.request GET /dashboard duration_ms=184233 status=200",
    "2026-11-24T09:16:12Z WARN db.query slow query on invoices table duration_ms=41877",
    "2026-11-24T09:17:01Z ERROR pdf.render invoice={client_invoice} page overflow, lines dropped",
    "2026-11-24T09:17:02Z INFO retry.scheduled job=sync next_run=2026-11-24T09:22:02Z",
    "2026-11-24T09:22:02Z ERROR sync.batch failed items={n} cause=oauth token expired",
    "2026-11-24T09:22:03Z INFO notify.email to={email} template=sync_failed sent=true",
    "Traceback (most recent call last): File client.py, line 88, in post_invoice",
    "  raise RateLimited(response.status_code, response.headers.get('retry-after'))",
    "tallyworks_client.errors.RateLimited: 429 Too Many Requests (retry-after: 60)",
]

# What a developer says they already tried, between the report and the pasted log.
TRIED = [
    "What we tried so far: we restarted our worker, rotated the API key, and ran the same "
    "requests from a second server in another region. The results were the same each time. "
    "Our integration has run unchanged for eight months and nothing was deployed on our side "
    "this week.",
    "Things we checked: the clock on our servers is in sync, the secret in our settings "
    "matches the one in the developer page, and our firewall allows your addresses. A "
    "colleague reproduced it from a laptop at home too, so it is not our office network.",
    "Steps already taken: we cleared the browser cache, tried a private window and a "
    "different machine, and asked two colleagues to try from their accounts. All of us see "
    "the same thing. I have pasted the relevant part of our log below with the request ids.",
]

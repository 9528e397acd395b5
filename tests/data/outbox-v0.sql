-- An outbox written by sms-bridge 0.1.0 (before schema versions): one SMS sent, one queued, one rejection.
BEGIN TRANSACTION;
CREATE TABLE balances (
    account TEXT PRIMARY KEY,
    balance REAL NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE imap_seen (
    mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    mail_id TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (mailbox, uidvalidity, uid)
);
CREATE TABLE rejections (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    via TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpts TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    problems TEXT NOT NULL,
    notice TEXT NOT NULL
);
INSERT INTO "rejections" VALUES('01a22979e0cd6206656db3',1.79599218298931741708e+09,'imap:box','x@corp.example','sms@bridge.test','<r@x>','bad','[["mobile", "no phone number given"]]','pending');
CREATE TABLE seen (
    fingerprint TEXT PRIMARY KEY,
    mail_id TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE sms (
    id TEXT PRIMARY KEY,
    mail_id TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    via TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpts TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    route TEXT NOT NULL,
    account TEXT NOT NULL,
    provider TEXT NOT NULL,
    sender TEXT NOT NULL,
    numbers TEXT NOT NULL,
    text TEXT NOT NULL,
    lang INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    pages INTEGER NOT NULL,
    points INTEGER NOT NULL,
    batch_key TEXT NOT NULL,
    cred_user TEXT,
    cred_pass TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    last_code TEXT NOT NULL DEFAULT '',
    provider_reply TEXT NOT NULL DEFAULT '',
    provider_msg_id TEXT NOT NULL DEFAULT '',
    points_charged INTEGER,
    balance_after REAL,
    confirmed INTEGER,
    notice TEXT NOT NULL DEFAULT 'none'
);
INSERT INTO "sms" VALUES('01a22979e0cd8815103971','01a22979e0cd8815103971',1.79599218298931741708e+09,1.79599218498931741715e+09,'smtp','zabbix@corp.example','oncall@alerts.bridge.test','<old-1@corp.example>','Problem: disk full','alerts','kwt','kwtsms-http','KWT-SMS','96597119440,96566074414','Problem: disk full on db01',1,'gsm7',1,2,'dcc94c3c8fbe5d0507bd4e4f7a3379d2',NULL,NULL,'sent',1,1.79599218298931741708e+09,'','','OK:oldmsgid:2:2:998:1','oldmsgid',2,998.0,1,'none');
INSERT INTO "sms" VALUES('01a22979e0cd296edabf37','01a22979e0cd296edabf37',1.79599218298931741708e+09,1.79599218298931741708e+09,'smtp','erp@corp.example','sms@bridge.test','<old-2@corp.example>','x','alerts','kwt','kwtsms-http','KWT-SMS','96597119440','Invoice 42 is due',1,'gsm7',1,1,'16e7d03304b4a82b6b30cbabfaf26324',NULL,NULL,'queued',0,1.79599218298931741708e+09,'','','','',NULL,NULL,NULL,'none');
CREATE TABLE usage (
    scope TEXT NOT NULL,
    window TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    points INTEGER NOT NULL,
    PRIMARY KEY (scope, window, bucket)
);
CREATE INDEX sms_due ON sms(account, next_attempt) WHERE state = 'queued';
CREATE INDEX sms_batch ON sms(account, batch_key, next_attempt) WHERE state = 'queued';
CREATE INDEX sms_mail ON sms(mail_id);
CREATE INDEX sms_state ON sms(state, updated);
CREATE INDEX sms_notice ON sms(notice) WHERE notice = 'pending';
CREATE INDEX seen_at ON seen(at);
CREATE INDEX rejections_notice ON rejections(notice) WHERE notice = 'pending';
COMMIT;

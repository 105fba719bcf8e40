"""A scripted SMTP server for faults a real server will not produce on demand: a refused
greeting, silence, a connection cut in the middle of the message body, a tiny SIZE limit.

It runs in a thread of the test process, records every session (the commands in order) and
every message it accepted (envelope and content), and answers as `script` says:
  script.greeting       the greeting line(s), or None to say nothing at all
  script.ehlo           EHLO reply lines
  script.reply(cmd)     a reply for a command line, or None for the default
  script.cut_after      close the connection after this many bytes of message content
  script.rcpt_limit     recipients taken per transaction; past it, 452 4.5.3 too many recipients
  script.max_sessions   sessions at once; past it, the greeting is 421 4.7.0 too many connections
  script.thread_limit   sessions at once that may send (Exchange Online's 3 per mailbox); past
                        it, MAIL gets 432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded
  script.greeting_limit sessions at once; past it, that 432 is the greeting
"""
import base64
import socket
import threading
import time


class Script:
    def __init__(self, greeting="220 scripted.test ESMTP", ehlo=("250-scripted.test", "250-PIPELINING",
                                                                  "250 8BITMIME"), replies=None, cut_after=None,
                 slow=0.0, xoauth2=None, rcpt_limit=None, max_sessions=None, thread_limit=None,
                 greeting_limit=None):
        self.greeting = greeting
        self.ehlo = list(ehlo)
        self.replies = dict(replies or {})  # command prefix (upper case) -> reply line(s)
        self.cut_after = cut_after
        self.slow = slow  # seconds before the reply to the end of data
        # the bearer token AUTH XOAUTH2 accepts (Microsoft's and Google's dialogue), or a function
        # that says whether it accepts a token
        self.xoauth2 = xoauth2
        self.rcpt_limit = rcpt_limit
        self.max_sessions = max_sessions
        self.thread_limit = thread_limit
        self.greeting_limit = greeting_limit

    def reply(self, line):
        upper = line.upper()
        for prefix, reply in self.replies.items():
            if upper.startswith(prefix):
                return reply
        return None


class ScriptedSmtp:
    def __init__(self, address, port, script=None):
        self.address, self.port = address, port
        self.script = script or Script()
        self.sessions = []  # per connection: list of command lines
        self.peers = []  # per connection: the client's address
        self.open_sessions = 0
        self.most_open = 0  # the most sessions open at the same time
        self.sending = 0  # sessions that got past MAIL (thread_limit)
        self.most_sending = 0
        self.throttled = 0  # 432 replies given
        self.mail_times = []  # when each MAIL was accepted (time.monotonic())
        self.messages = []  # (mail_from, [rcpt], data bytes)
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(50)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def close(self):
        self.running = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)

    def _accept(self):
        while self.running:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        commands = []
        sending = False
        with self.lock:
            self.sessions.append(commands)
            self.open_sessions += 1
            self.most_open = max(self.most_open, self.open_sessions)
        f = conn.makefile("rb")
        s = self.script

        def send(lines):
            if isinstance(lines, str):
                lines = [lines]
            conn.sendall("".join(l + "\r\n" for l in lines).encode())

        try:
            if s.max_sessions is not None and self.open_sessions > s.max_sessions:
                self.refused = getattr(self, "refused", 0) + 1
                send("421 4.7.0 scripted.test Error: too many connections")
                return
            if s.greeting_limit is not None and self.open_sessions > s.greeting_limit:
                with self.lock:
                    self.throttled += 1
                send("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=scripted.test]")
                return
            if s.greeting is None:
                f.read()  # silence until the client gives up
                return
            send(s.greeting)
            mail_from, rcpts = None, []
            while True:
                raw = f.readline()
                if not raw:
                    return
                line = raw.decode(errors="replace").rstrip("\r\n")
                commands.append(line)
                scripted = s.reply(line)
                verb = line.split(" ", 1)[0].upper()
                if scripted is not None:
                    send(scripted)
                    first = scripted if isinstance(scripted, str) else scripted[0]
                    if first.startswith("421"):
                        return
                    if verb == "MAIL" and first.startswith("2"):
                        mail_from, rcpts = line, []
                    if verb == "RCPT" and first.startswith("2"):
                        rcpts.append(line)
                    continue
                if verb in ("EHLO",):
                    send(s.ehlo)
                elif verb == "HELO":
                    send("250 scripted.test")
                elif verb == "MAIL":
                    with self.lock:
                        if not sending and s.thread_limit is not None and self.sending >= s.thread_limit:
                            self.throttled += 1
                            refuse = True
                        else:
                            refuse = False
                            if not sending:
                                sending = True
                                self.sending += 1
                                self.most_sending = max(self.most_sending, self.sending)
                            self.mail_times.append(time.monotonic())
                    if refuse:
                        mail_from, rcpts = None, []
                        send("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=scripted.test]")
                        continue
                    mail_from, rcpts = line, []
                    send("250 2.1.0 Ok")
                elif verb == "RCPT" and mail_from is None:
                    send("503 5.5.1 Error: need MAIL command")
                elif verb == "DATA" and not rcpts:
                    send("554 5.5.1 Error: no valid recipients")
                elif verb == "RCPT":
                    if s.rcpt_limit is not None and len(rcpts) >= s.rcpt_limit:
                        send("452 4.5.3 Error: too many recipients")
                    else:
                        rcpts.append(line)
                        send("250 2.1.5 Ok")
                elif verb == "DATA":
                    send("354 End data with <CR><LF>.<CR><LF>")
                    data = b""
                    while True:
                        chunk = f.readline()
                        if not chunk:
                            return
                        if s.cut_after is not None and len(data) + len(chunk) > s.cut_after:
                            return  # cut the connection in the middle of the content
                        if chunk == b".\r\n":
                            break
                        data += chunk
                    time.sleep(s.slow)
                    with self.lock:
                        self.messages.append((mail_from, list(rcpts), data))
                    mail_from, rcpts = None, []
                    send(f"250 2.0.0 Ok: queued as S{len(self.messages)}")
                elif verb == "AUTH" and s.xoauth2 is not None and line.upper().startswith("AUTH XOAUTH2 "):
                    decoded = base64.b64decode(line.split(" ", 2)[2]).decode(errors="replace")
                    bearer = decoded.split("auth=Bearer ", 1)[-1].split("\x01", 1)[0]
                    if bearer == s.xoauth2 if isinstance(s.xoauth2, str) else s.xoauth2(bearer):
                        send("235 2.7.0 Authentication successful")
                    else:
                        send("334 " + base64.b64encode(b'{"status":"401","schemes":"bearer","scope":"x"}').decode())
                        commands.append(f.readline().decode(errors="replace").rstrip("\r\n"))
                        send("535 5.7.3 Authentication unsuccessful")
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    send("250 2.0.0 Ok")
                elif verb == "QUIT":
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.2 Error: command not recognized")
        except OSError:
            return
        finally:
            with self.lock:
                self.open_sessions -= 1
                if sending:
                    self.sending -= 1
            try:
                f.close()
                conn.close()
            except OSError:
                pass

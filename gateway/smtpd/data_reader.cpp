#include "gateway/smtpd/data_reader.hpp"

#include <cstring>

namespace gateway {

void DataReader::fail(DataError e) {
    if (m_error == DataError::None) m_error = e;
}

void DataReader::emit(std::string& out, std::string_view bytes) {
    m_size += bytes.size();
    m_line += bytes.size();
    if (m_line > m_limits.line_length) fail(DataError::LineTooLong);
    if (m_size > m_limits.message_size) fail(DataError::TooBig);
    if (m_error == DataError::None) out.append(bytes);
}

void DataReader::end_line(std::string& out, bool crlf) {
    if (!crlf && m_limits.reject_bare_lf) fail(DataError::BareLf);
    m_size += 2;
    if (m_size > m_limits.message_size) fail(DataError::TooBig);
    if (m_error == DataError::None) out.append("\r\n");
    m_line = 0;
    m_prev_crlf = crlf;
    m_state = State::LineStart;
}

// Whole ordinary lines from `i` on ("text<CR><LF>", not starting with a dot, no bare <CR> or <LF>,
// within the line length): the end of the run, or `i` when the next line needs the byte-wise
// rules. Such lines are stored exactly as they came, so a run is appended in one piece.
size_t DataReader::plain_lines(std::string_view in, size_t i) const {
    size_t j = i;
    bool line_start = m_state == State::LineStart;
    uint64_t line = m_line;
    const char* data = in.data();
    while (j < in.size()) {
        if (line_start && data[j] == '.') break;
        const void* cr = std::memchr(data + j, '\r', in.size() - j);
        if (!cr) break;
        size_t k = size_t(static_cast<const char*>(cr) - data);
        if (k + 1 >= in.size() || data[k + 1] != '\n') break;      // its <LF> has not come, or a bare <CR>
        if (std::memchr(data + j, '\n', k - j) != nullptr) break;  // a bare <LF> in the line
        if (line + (k - j) > m_limits.line_length) break;
        j = k + 2;
        line = 0;
        line_start = true;
    }
    if (j > i && m_size + (j - i) > m_limits.message_size) return i;  // the byte-wise path says TooBig
    return j;
}

size_t DataReader::feed(std::string_view in, std::string& out) {
    size_t i = 0;
    while (i < in.size() && m_state != State::Done) {
        char c = in[i];
        if ((m_state == State::LineStart || m_state == State::InLine) && m_error == DataError::None) {
            size_t end = plain_lines(in, i);
            if (end > i) {
                out.append(in.data() + i, end - i);
                m_size += end - i;
                m_line = 0;
                m_prev_crlf = true;
                m_state = State::LineStart;
                i = end;
                continue;
            }
        }
        switch (m_state) {
        case State::LineStart:
            if (c == '.') {
                m_state = State::Dot;
                ++i;
                continue;
            }
            m_state = State::InLine;
            continue;  // the same byte, as line content
        case State::Dot:
            // RFC 5321 4.5.2: the leading dot of a content line is removed.
            if (c == '\r')
                m_state = State::DotCr;
            else if (c == '\n')
                end_line(out, false);
            else
                m_state = State::InLine;
            if (c == '\r' || c == '\n') ++i;
            continue;
        case State::DotCr:
            if (c == '\n') {
                ++i;
                if (m_prev_crlf) {
                    m_state = State::Done;  // <CR><LF>.<CR><LF>
                    continue;
                }
                end_line(out, true);  // "." after a bare <LF>: content, never the end
                continue;
            }
            fail(DataError::BareCr);
            m_state = c == '\r' ? State::Cr : State::InLine;
            if (c == '\r') ++i;
            continue;
        case State::InLine: {
            // Copy the run of ordinary bytes in one go.
            size_t end = in.size();
            if (const void* cr = std::memchr(in.data() + i, '\r', in.size() - i))
                end = size_t(static_cast<const char*>(cr) - in.data());
            if (const void* lf = std::memchr(in.data() + i, '\n', end - i))
                end = size_t(static_cast<const char*>(lf) - in.data());
            if (end > i) {
                emit(out, in.substr(i, end - i));
                i = end;
                continue;
            }
            m_state = c == '\r' ? State::Cr : State::InLine;
            if (c == '\n') end_line(out, false);
            ++i;
            continue;
        }
        case State::Cr:
            if (c == '\n') {
                end_line(out, true);
                ++i;
                continue;
            }
            fail(DataError::BareCr);  // the <CR> is dropped; the message is refused anyway
            if (c == '\r')
                ++i;
            else
                m_state = State::InLine;
            continue;
        case State::Done: break;
        }
    }
    return i;
}

}  // namespace gateway

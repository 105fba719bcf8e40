#include "gateway/smtpd/data_reader.hpp"

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

size_t DataReader::feed(std::string_view in, std::string& out) {
    size_t i = 0;
    while (i < in.size() && m_state != State::Done) {
        char c = in[i];
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
            size_t end = i;
            while (end < in.size() && in[end] != '\r' && in[end] != '\n')
                ++end;
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

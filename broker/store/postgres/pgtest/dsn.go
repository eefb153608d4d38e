package pgtest

// BadDSNs returns DSNs that hold password and do not parse, for tests
// that errors about them never show it: in the key=value form (also with
// spaces around "=", which pgx's own masking misses), quoted (with a
// space, an escaped quote, or unterminated) and in a URL, each with a
// syntax error elsewhere; and with what may be a password's second half
// as the value of another setting.
func BadDSNs(password string) []string {
	return []string{
		"host=127.0.0.1 password=" + password + " port=notaport",
		"host=127.0.0.1 password = " + password + " port=notaport",
		"host=127.0.0.1 password='" + password + " x' port=notaport",
		`host=127.0.0.1 password='it\'s ` + password + `' port=notaport`,
		"host=127.0.0.1 password='" + password + " port=5432",
		"host=127.0.0.1 password=" + password + " x port=5432",
		"host=127.0.0.1 password=" + password + " pool_max_conns=many",
		"postgres://kurier:" + password + "@127.0.0.1:notaport/kurier",
		"postgres://kurier:" + password + "/x@127.0.0.1:5432/kurier",
		"postgres://kurier:" + password + "@127.0.0.1/kurier?sslmode=bogus",
		"postgres://127.0.0.1/kurier?password=" + password + "&port=x",
		// A password with a space, unquoted, whose rest pgconn takes
		// for the value of another setting, which it names.
		"host=127.0.0.1 password=abc target_session_attrs=" + password,
		"host=127.0.0.1 password=abc sslmode=" + password,
		"host=127.0.0.1 password=abc channel_binding=" + password,
		"host=127.0.0.1 password=abc sslcertmode=" + password,
	}
}

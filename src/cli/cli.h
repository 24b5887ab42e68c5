/* cli.h - subcommands that live in their own files; main.c dispatches to them.
 *
 * Each takes the arguments after its own name (argv[0] is the first option)
 * and returns the process exit status: 0 success, 1 bad input or failure,
 * 2 usage error. */
#ifndef TG_CLI_H
#define TG_CLI_H

/* tollgate sigv4: signs a raw HTTP/1.1 request read on stdin (cmd_sigv4.c). */
int tg_cmd_sigv4(int argc, char **argv);
/* tollgate prices show: the price book's effective prices (cmd_prices.c). */
int tg_cmd_prices(int argc, char **argv);

/* tollgate report [run]: chargeback reports (cmd_report.c). */
int tg_cmd_report(int argc, char **argv);
/* tollgate usage import: events from JSON lines (cmd_report.c). */
int tg_cmd_usage_import(int argc, char **argv);

/* tollgate units|teams ..., keys create|show|update|rotate (cmd_gov.c):
 * group is "units", "teams" or "keys"; argv[0] is the subcommand. */
int tg_cmd_gov(const char *group, int argc, char **argv);
/* Whether cmd_gov.c has group's subcommand sub. */
int tg_cmd_gov_has(const char *group, const char *sub);

#endif

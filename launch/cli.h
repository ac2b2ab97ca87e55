/* cli.h: the subcommand table entries; each lives in launch/cmd_<name>.c. */
#ifndef XR_CLI_H
#define XR_CLI_H

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} CliCommand;

int cmd_version(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_mine(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_plot(int argc, char **argv);

#endif
